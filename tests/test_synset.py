"""Class names (gradcam_core.formats.synset): Caffe's ImageNet synset_words.txt (tests/data, the same file
as models/squeezenet1_1/synset_words.txt) and small hand-made files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gradcam_core.errors import GradCamError
from gradcam_core.formats.synset import ClassNames, find_synset, parse_synset, read_synset

DATA = Path(__file__).resolve().parent / "data"
IMAGENET = DATA / "synset_words.txt"


@pytest.fixture(scope="module")
def imagenet() -> ClassNames:
    return read_synset(IMAGENET)


def write(tmp_path: Path, content: str | bytes, name: str = "names.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


# ------------------------------------------------------------------------------ ImageNet

def test_imagenet_has_1000_classes_line_i_plus_1_naming_output_i(imagenet: ClassNames) -> None:
    lines = IMAGENET.read_text().splitlines()
    assert len(imagenet) == 1000 == len(lines)
    for i in (0, 282, 999):
        wnid, text = lines[i].split(" ", 1)
        assert (imagenet.wnid(i), imagenet.text(i)) == (wnid, text)
    assert imagenet.text(0) == "tench, Tinca tinca" and imagenet.wnid(0) == "n01440764"
    imagenet.check_count(1000)
    with pytest.raises(GradCamError, match="names 1000 classes but the net has 10 outputs"):
        imagenet.check_count(10)


def test_the_display_name_is_the_first_synonym(imagenet: ClassNames) -> None:
    assert imagenet.name(282) == "tiger cat"
    assert imagenet.name(0) == "tench"
    assert imagenet.name(242) == "boxer"
    assert imagenet.synonyms(0) == ("tench", "Tinca tinca")
    with pytest.raises(GradCamError, match=r"class index 1000 is out of range: .* names 1000 classes \(0\.\.999\)"):
        imagenet.name(1000)
    with pytest.raises(GradCamError, match="out of range"):
        imagenet.name(-1)


@pytest.mark.parametrize("query, index", [
    ("tiger cat", 282), ("boxer", 242), ("TIGER  Cat", 282), ("  tiger cat ", 282), ("Tench", 0),
    ("tinca tinca", 0),  # a later synonym
    ("tench, Tinca tinca", 0),  # the whole text
    ("n02123159", 282), ("N02108089", 242),  # WordNet ids
    ("partridge", 86),  # 86's display name; only a later synonym of 82 (ruffed grouse, partridge, ...)
    ("harp", 594),  # 594's display name; a later synonym of 593 (harmonica, mouth organ, harp, ...)
])
def test_lookup_is_case_insensitive_over_texts_names_synonyms_and_wnids(imagenet: ClassNames, query: str,
                                                                         index: int) -> None:
    assert imagenet.lookup(query) == index


def test_an_ambiguous_name_lists_its_classes_with_1_based_labels(imagenet: ClassNames) -> None:
    with pytest.raises(GradCamError) as err:
        imagenet.lookup("Crane")
    message = str(err.value)
    assert "class name 'Crane' is ambiguous" in message
    assert "label 135 'n02012849 crane'" in message and "label 518 'n03126707 crane'" in message
    with pytest.raises(GradCamError, match="label 388 'n02509815 lesser panda.*label 389 'n02510455 giant panda"):
        imagenet.lookup("panda")  # a later synonym of both


def test_an_unknown_name_suggests_close_matches(imagenet: ClassNames) -> None:
    with pytest.raises(GradCamError) as err:
        imagenet.lookup("tigr cat")
    assert "no class named 'tigr cat'" in str(err.value) and "'tiger cat' (label 283)" in str(err.value)
    with pytest.raises(GradCamError, match="'crane' \\(labels 135, 518\\)"):
        imagenet.lookup("cranes")
    with pytest.raises(GradCamError, match=r"no class named 'q+' in [^;]*$"):
        imagenet.lookup("qqqqqqqqqqqqqqqqqqqqqqqqqqqqqq")
    with pytest.raises(GradCamError, match="empty class name"):
        imagenet.lookup("   ")


# ------------------------------------------------------------------------------ small files

def test_a_plain_file_has_one_name_a_line(tmp_path: Path) -> None:
    names = read_synset(write(tmp_path, "cat\r\ndog\r\nhot dog, red hot\r\n\r\n\n"))
    assert len(names) == 3 and names.wnid(0) is None
    assert [names.name(i) for i in range(3)] == ["cat", "dog", "hot dog"]
    assert names.lookup("RED HOT") == 2 and names.lookup("Dog") == 1


def test_a_duplicate_line_is_ambiguous_not_silently_the_first(tmp_path: Path) -> None:
    names = read_synset(write(tmp_path, "n00000001 cat\nn00000002 dog\nn00000001 cat\n"))
    assert len(names) == 3 and names.name(2) == "cat"
    with pytest.raises(GradCamError, match=r"'cat' is ambiguous .*label 1 'n00000001 cat'; label 3 'n00000001 cat'"):
        names.lookup("cat")
    assert names.lookup("dog") == 1


@pytest.mark.parametrize("content, words", [
    (b"", "holds no class names"),
    (b"\n \n\r\n", "holds no class names"),
    (b"cat\n\ndog\n", "line 2 is empty"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is a binary file"),
    (b"caf\xe9\n", "is not UTF-8 text (byte 3)"),
    (b"cat\n\x1b[31mred\x1b[0m\n", "line 2 holds control characters"),
])
def test_a_bad_file_is_one_line_naming_it(tmp_path: Path, content: bytes, words: str) -> None:
    path = write(tmp_path, content, "bad names.txt")
    with pytest.raises(GradCamError) as err:
        read_synset(path)
    message = str(err.value)
    assert f"class names file '{path}'" in message and words in message and "\n" not in message, message


def test_unreadable_and_oversized_files_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(GradCamError, match="cannot read class names file .*missing.txt.*No such file"):
        read_synset(tmp_path / "missing.txt")
    with pytest.raises(GradCamError, match="it is a directory"):
        read_synset(tmp_path)
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "pipe.txt")
        with pytest.raises(GradCamError, match="not a regular file"):
            read_synset(tmp_path / "pipe.txt")
    import gradcam_core.formats.synset as synset

    monkeypatch.setattr(synset, "MAX_SYNSET_BYTES", 1 << 20)
    with pytest.raises(GradCamError, match="is larger than 1 MB"):
        read_synset(write(tmp_path, (b"x" * 1023 + b"\n") * 1024 + b"y"))
    assert len(read_synset(write(tmp_path, (b"x" * 1023 + b"\n") * 1024))) == 1024  # exactly the limit
    monkeypatch.setattr(synset, "MAX_CLASSES", 3)
    with pytest.raises(GradCamError, match="more than 3 lines"):
        parse_synset("a\nb\nc\nd\n", "four.txt")


def test_find_synset_looks_beside_the_model_file(tmp_path: Path) -> None:
    model = tmp_path / "net.caffemodel"
    assert find_synset(model) is None
    (tmp_path / "synset_words.txt").write_text("a\n")
    assert find_synset(model) == tmp_path / "synset_words.txt"
    assert find_synset(str(model)) == tmp_path / "synset_words.txt"

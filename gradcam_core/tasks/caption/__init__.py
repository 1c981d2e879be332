"""Captioning Grad-CAM on neuraltalk2 (karpathy) checkpoints, as grad-cam's ``captioning.lua`` ran them.

A neuraltalk2 checkpoint (``torch.save`` of a Lua table) holds ``protos.cnn`` (VGG-16 up to drop7, then
Linear(4096, E) and ReLU: the image feature), ``protos.lm`` (``nn.LanguageModel``: a word lookup table
and an LSTM ``core`` built with nngraph) and ``vocab`` (``"1".."V"`` -> word). The original:

1. preprocesses the image as every grad-cam script does (BGR, mean-subtracted) and feeds it to this
   CNN, although neuraltalk2 swapped conv1_1's filters to take RGB - reproduced, so maps match;
2. generates a caption by greedy decoding, printed, and used when ``-caption`` is '';
3. scores the caption: the sum over its words of log p(word_t | image, words_<t) (no END term);
4. explains that score: Grad-CAM at ``-layer`` of the CNN, guided backprop, guided Grad-CAM.

Token numbering is Lua's, 1-based: words are 1..V; the lookup table has a row V+1 for the START token
and the decoder a class V+1 for END (the same number, two meanings); 0 pads label columns.

* :mod:`.model`       ``LanguageModel`` and ``Captioner`` (CNN, language model, vocabulary)
* :mod:`.checkpoint`  ``load_checkpoint``: the .t7 file -> ``Captioner``, or one clear refusal
* :mod:`.target`      the caption rules, ``caption_score``, ``CaptionTarget``, ``explain_captions``
"""
from ..vocabulary import UNK, Vocabulary
from .checkpoint import MAX_SEQ_LENGTH, load_checkpoint
from .model import Captioner, LanguageModel
from .target import (
    DEFAULT_CAPTION,
    CaptionTarget,
    caption_labels,
    caption_score,
    decode_captions,
    encode_caption,
    explain_captions,
    generate,
)

__all__ = [
    "DEFAULT_CAPTION", "MAX_SEQ_LENGTH", "UNK", "CaptionTarget", "Captioner", "LanguageModel", "Vocabulary",
    "caption_labels", "caption_score", "decode_captions", "encode_caption", "explain_captions", "generate",
    "load_checkpoint",
]

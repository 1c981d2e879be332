#!/usr/bin/env bash
# Fetch the model files the original grad-cam used, into the places the entry scripts look by default:
#   models/            VGG-16 and VGG-19 Caffe files (classification, VQA); AlexNet with "alexnet"
#   VQA_LSTM_CNN/      lstm.t7 and data_prepro.json (visual question answering)
#   neuraltalk2/       model_id1-501-1448236541.t7 (captioning)
# Usage: scripts/download_models.sh [classification|vqa|captioning|alexnet|all]   (default: all but alexnet)
# Downloads resume where an interrupted one stopped (curl -C - / wget -c). Needs network access.
# Environment: GRADCAM_MODELS_ROOT (where to put the folders; default: the project), DOWNLOAD_RETRIES (3).
set -euo pipefail
cd "${GRADCAM_MODELS_ROOT:-$(dirname "$0")/..}"  # GRADCAM_MODELS_ROOT: fetch elsewhere (tests)

fetch() {  # fetch URL DEST: resumable download into DEST (a .part file until complete)
    local url=$1 dest=$2
    if [ -s "$dest" ]; then echo "have $dest"; return 0; fi
    mkdir -p "$(dirname "$dest")"
    echo "fetching $url -> $dest"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --progress-bar --retry "${DOWNLOAD_RETRIES:-3}" -C - -o "$dest.part" "$url" || fail "$url" "$dest"
    elif command -v wget >/dev/null 2>&1; then
        wget -c --tries="${DOWNLOAD_RETRIES:-3}" -O "$dest.part" "$url" || fail "$url" "$dest"
    else
        echo "download_models.sh: neither curl nor wget is installed" >&2; exit 1
    fi
    mv "$dest.part" "$dest"
}

fail() {
    echo "download_models.sh: could not download $1 (offline, or the file moved)." >&2
    echo "  Partial data is kept in $2.part and resumes on the next run; or fetch the file by hand into $2." >&2
    exit 1
}

unzip_into() {  # unzip_into ZIP DIR: extract once
    command -v unzip >/dev/null 2>&1 || { echo "download_models.sh: unzip is not installed" >&2; exit 1; }
    unzip -n -q "$1" -d "$2"
}

vgg16() {
    fetch https://gist.githubusercontent.com/ksimonyan/211839e770f7b538e2d8/raw/c3ba00e272d9f48594acef1f67e5fd12aff7a806/VGG_ILSVRC_16_layers_deploy.prototxt models/VGG_ILSVRC_16_layers_deploy.prototxt
    fetch https://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_16_layers.caffemodel models/VGG_ILSVRC_16_layers.caffemodel
}
vgg19() {
    fetch https://gist.githubusercontent.com/ksimonyan/3785162f95cd2d5fee77/raw/bb2b4fe0a9bb0669211cf3d0bc949dfdda173e9e/VGG_ILSVRC_19_layers_deploy.prototxt models/VGG_ILSVRC_19_layers_deploy.prototxt
    fetch https://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/VGG_ILSVRC_19_layers.caffemodel models/VGG_ILSVRC_19_layers.caffemodel
}
alexnet() {
    fetch https://raw.githubusercontent.com/BVLC/caffe/master/models/bvlc_alexnet/deploy.prototxt models/bvlc_alexnet_deploy.prototxt
    fetch http://dl.caffe.berkeleyvision.org/bvlc_alexnet.caffemodel models/bvlc_alexnet.caffemodel
}
vqa() {
    vgg19
    fetch https://filebox.ece.vt.edu/~jiasenlu/codeRelease/vqaRelease/train_only/data_train_val.zip VQA_LSTM_CNN/data_train_val.zip
    fetch https://filebox.ece.vt.edu/~jiasenlu/codeRelease/vqaRelease/train_only/pretrained_lstm_train_val.t7.zip VQA_LSTM_CNN/pretrained_lstm_train_val.t7.zip
    unzip_into VQA_LSTM_CNN/data_train_val.zip VQA_LSTM_CNN
    unzip_into VQA_LSTM_CNN/pretrained_lstm_train_val.t7.zip VQA_LSTM_CNN
}
captioning() {
    fetch http://cs.stanford.edu/people/karpathy/neuraltalk2/checkpoint_v1.zip neuraltalk2/checkpoint_v1.zip
    unzip_into neuraltalk2/checkpoint_v1.zip neuraltalk2
}

case "${1:-all}" in
    classification) vgg16 ;;
    vqa) vqa ;;
    captioning) captioning ;;
    alexnet) alexnet ;;
    all) vgg16; vqa; captioning ;;
    *) echo "usage: scripts/download_models.sh [classification|vqa|captioning|alexnet|all]" >&2; exit 2 ;;
esac
echo "done"

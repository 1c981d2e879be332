"""What is explained, per task: the model of the task loaded from its files, its vocabulary, and the
targets whose gradient the engine follows. Results are 0-based indices and tensors; no printed text
(the front ends in :mod:`gradcam_core.cli` and the web demo word them).

* :mod:`.vocabulary`  the word table both language models share (1-based ids <-> words, ``UNK``, answers)
* :mod:`.classify`    a classifier and its class logits
* :mod:`.vqa`         VQA_LSTM_CNN: question encoder, answer net, the image CNN, answer targets
* :mod:`.caption`     neuraltalk2: the CNN, the language model, caption targets

Each task's functions load its model from its files and explain 0-based targets for a batch of
preprocessed images from one forward (``explain_classes``, ``explain_answers``, ``explain_captions``);
the shared pieces live below: the LSTM cell in :mod:`gradcam_core.nets.lstm`, ``nn.Normalize`` in
:mod:`gradcam_core.nets.modules`, the index-or-predicted choice in :mod:`gradcam_core.engine.targets`.
"""

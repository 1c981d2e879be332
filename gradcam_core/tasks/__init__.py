"""What is explained, per task: the model of the task loaded from its files, its vocabulary, and the
targets whose gradient the engine follows. Results are 0-based indices and tensors; no printed text
(the front ends in :mod:`gradcam_core.cli` and the web demo word them).

* :mod:`.classify`  a classifier and its class logits
* :mod:`.vqa`       VQA_LSTM_CNN: question encoder, answer net, the image CNN, answer targets
* :mod:`.caption`   neuraltalk2: the CNN, the language model, caption targets
"""

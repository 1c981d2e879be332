"""Running explanations over the images of a request, the same way for every front end.

* :mod:`.inputs`   which images: one file, a folder, a glob; where each one's files go
* :mod:`.shards`   this process's part of the work under ``torchrun``
* :mod:`.batches`  the batch loop: load, explain a batch, print its lines, write its files, skip bad images
* :mod:`.outputs`  the three images of a target, their safe file names, writing them
"""

"""Running explanations over the images of a request, the same way for every front end.

* :mod:`.task`     the one task interface both front ends drive (``Task``, ``Methods``, the results, each
                   target's files); :mod:`.classification`, :mod:`.vqa`, :mod:`.captioning` implement it
* :mod:`.inputs`   which images: one file, a folder, a glob; where each one's files go
* :mod:`.shards`   this process's part of the work under ``torchrun``
* :mod:`.batches`  the batch loop: load, explain a batch, print its lines, write its files, skip bad images
* :mod:`.outputs`  a target's images (a method's map, guided backprop, their product, the overlay), their
                   safe file names, writing them
"""

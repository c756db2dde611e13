"""The data layer: from raw inputs to training batches.

    synthetic   the embedded captioned-shapes generator (deterministic per seed and index, any resolution)
    preprocess  one input file -> one stored image (safe decode, RGB, EXIF orientation, ADM centre crop)
    sources     listing the inputs of a folder, a pairs table or existing shards
    shards      writing WebDataset tar shards atomically and reproducibly; indexing existing ones
    manifest    manifest.json: counts, class balance, caption lengths, checksums, skipped inputs
    ingest      `vtp ingest`: parallel workers, duplicates, splits, publication of a complete dataset
    loader      the training stream in fixed epochs (bad samples skipped and counted) and the evaluation pass
    views       DINOv2-style multi-crop views and iBOT block masks (batched, any device)
    photometric DINOv2's colour jitter, grayscale, blur and solarisation of the views, one parameter per sample
    text        caption tokens through open_clip's bundled tokenizer

Images inside the library are float (B, 3, H, W) in [-1, 1]; uint8 only at file boundaries.
"""

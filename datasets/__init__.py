"""Data: one module per concept.

* ``image_io``: reading an image file as RGB (``load_rgb``), the one image reader.
* ``transforms``: preprocessing (``preprocess``, ``TestTransform``) and augmentation
  (``TrainTransform``), the one pixel path of train, val, predict, export and infer.
* ``classes``: built-in class lists and the ``classes.txt`` format (``read_class_file``).
* ``splits``: the prepared split JSON format (``read_split``), the one split reader.
* ``config``: the recipe table per ``--dataset`` (``dataset_defaults``, ``DEFAULT_DATASET``)
  and the one class-name search order (``resolve_classes``).
* ``dataset``: ``MultiLabelDataset``, one split as (image, target) samples.
* ``samplers``: seeded per-epoch batch order, data-parallel sharding, mid-epoch resume.
* ``loader``: ``make_loader``, the one batch loader (a bad image stops it, never hangs).
* ``prepare``, ``make_demo``: writing splits and classes.txt from the raw datasets.
"""

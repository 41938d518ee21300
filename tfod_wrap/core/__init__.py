"""What every stage needs, in one place: stages import the core, never each other.

- errors: UserError, the one-line failures the CLI prints (exit 2);
- files: atomic writes and `claim_output(path, kind)`, the one rule for replacing an output folder;
- textfiles: user text files read strictly (encoding, BOM, NUL);
- processes: workers that die with their parent, SIGTERM as Ctrl-C;
- resources: files shipped inside the package;
- nodejs: the Node.js runtime and the page's npm packages;
- tflite: the LiteRT interpreter and the TFLite post-processing op's tensors;
- checkpoints: which checkpoints a training run kept;
- pipeline: pipeline.config files loaded and saved as protos, templates, the active model, the learning-rate
  schedule; overrides (`PATH=VALUE`) and schedule (batch size and steps, the schedule kept consistent) rewrite them;
- labelmap: label maps read, checked and written;
- records: TFRecords of tf.train.Example, the writer (no TensorFlow) and the reader;
- model: `build_model(pipeline)`, its variables created, a checkpoint restored with a one-line error;
- detections: `Detections`, one image's boxes, classes and scores, and their COCO results;
- detector: one `Detector` interface, image -> Detections, for a checkpoint, a SavedModel, TFLite and TF.js;
- weights: where a model's weights come from (the pretrained cache, a template's default start).

Importing this package imports nothing heavy: each module pulls in TensorFlow only where it needs it.
"""

"""What every stage needs, in one place: stages import the core, never each other.

- errors: UserError, the one-line failures the CLI prints (exit 2);
- files: atomic writes and `claim_output(path, kind)`, the one rule for replacing an output folder;
- textfiles: user text files read strictly (encoding, BOM, NUL);
- processes: workers that die with their parent, SIGTERM as Ctrl-C;
- resources: files shipped inside the package;
- nodejs: the Node.js runtime and the page's npm packages;
- tflite: the LiteRT interpreter;
- checkpoints: which checkpoints a training run kept.

Importing this package imports nothing heavy: each module pulls in TensorFlow only where it needs it.
"""

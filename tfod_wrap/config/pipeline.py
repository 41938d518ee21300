"""Point a pipeline.config proto at the data and the fine-tune checkpoint (loading, saving and the other rewrites
are the core's: `tfod_wrap.core.pipeline`, `overrides`, `schedule`)."""

from __future__ import annotations

from pathlib import Path

from tfod_wrap.core.labelmap import read_label_map
from tfod_wrap.core.manifests import RecordsFolder
from tfod_wrap.core.pipeline import ConfigError, meta_architecture

NO_CHECKPOINT = "none"
# what a fine-tune checkpoint restores (fine_tune_checkpoint_type); the command line offers these
CHECKPOINT_TYPES = ("detection", "classification", "full")


def set_data(config, records_dir: str | Path) -> list[str]:
    """Point the config at a `tfod-wrap tfrecords` output folder: num_classes, inputs, label maps."""
    if not Path(records_dir).is_dir():  # checked before resolve(), which raises on a symlink loop
        raise ConfigError(f"{records_dir}: not a folder; --data takes the output folder of `tfod-wrap tfrecords`")
    records = RecordsFolder(Path(records_dir).resolve())
    splits = records.manifest.splits
    label_map = records.label_map
    num_classes = max(read_label_map(label_map).values())
    train_split = "train" if "train" in splits else next(iter(splits))
    eval_split = next((name for name in ("val", "validation", "eval", "test") if name in splits), train_split)

    meta_architecture(config).num_classes = num_classes
    readers = [(config.train_input_reader, train_split)]
    if not config.eval_input_reader:
        config.eval_input_reader.add()
    readers += [(reader, eval_split) for reader in config.eval_input_reader]
    for reader, split in readers:
        reader.label_map_path = str(label_map)
        reader.tf_record_input_reader.input_path[:] = [str(records.split_pattern(split))]
    notes = [f"num_classes = {num_classes}", f"train input: {train_split}", f"eval input: {eval_split}"]
    if eval_split == train_split:
        notes.append(f"warning: no val/test split in {records.path}; evaluating on the training split")
    return notes


def set_checkpoint(config, prefix: str | Path, checkpoint_type: str = "detection") -> list[str]:
    """fine_tune_checkpoint (+ type and version V2). A folder means its ckpt-0, as in model-zoo tarballs;
    "none" means random initialisation, said explicitly."""
    if str(prefix) == NO_CHECKPOINT:
        config.train_config.ClearField("fine_tune_checkpoint")
        return ["fine_tune_checkpoint: none (random initialisation, as asked by --checkpoint none)"]
    prefix = Path(prefix)
    for candidate in (prefix / "checkpoint" / "ckpt-0", prefix / "ckpt-0"):
        if prefix.is_dir() and Path(f"{candidate}.index").is_file():
            prefix = candidate
            break
    if not Path(f"{prefix}.index").is_file():
        raise ConfigError(f"{prefix}: no checkpoint there (expected {prefix}.index and {prefix}.data-*)")
    if checkpoint_type not in CHECKPOINT_TYPES:
        raise ConfigError(f"checkpoint type must be detection, classification or full, got {checkpoint_type!r}")
    train = config.train_config
    train.fine_tune_checkpoint = str(prefix.resolve())
    train.fine_tune_checkpoint_type = checkpoint_type
    from object_detection.protos import train_pb2

    train.fine_tune_checkpoint_version = train_pb2.CheckpointVersion.Value("V2")
    return [f"fine_tune_checkpoint = {prefix} ({checkpoint_type}, V2)"]

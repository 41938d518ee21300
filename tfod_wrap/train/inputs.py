"""The training input: TFOD's `inputs.train_input` (decoding, the config's augmentations, resizing, padding,
batching), optionally with the decoded records cached in memory.

TFOD's own builder reads, shuffles and repeats the raw records and then decodes every image again on every
epoch. With `cache`, the records are read and decoded once (the JPEG decode and the parsing of every field), kept
in memory, shuffled and repeated from there; the random augmentation, the resize and the padding still run per
step, so every step sees a freshly augmented image as before (a cache of resized images would crop the resized
image instead of the original, which changes what the model sees). Only what fits is cached: training records
larger than CACHE_MAX_RECORD_BYTES in all are read as TFOD reads them."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

# Decoded images are ~10x their JPEG bytes: 256 MB of records is ~2.5 GB of memory.
CACHE_MAX_RECORD_BYTES = 256 * 1024 * 1024
RECORD_BUFFER_BYTES = 8 * 1000 * 1000  # as TFOD's builder


def train_dataset(train_config, input_config, model_config, model, input_context, *, cache: bool, log) -> Any:
    """TFOD's training dataset, its decoded records cached in memory when `cache` and they fit (see the module
    docstring); the input config's shuffle, readers, parallel calls and prefetch are honoured either way."""
    from object_detection import inputs

    if not cache or not _cacheable(input_config, log):
        return inputs.train_input(train_config, input_config, model_config, model=model, input_context=input_context)
    builders = inputs.INPUT_BUILDER_UTIL_MAP
    original = builders["dataset_build"]
    builders["dataset_build"] = _build_cached
    try:
        return inputs.train_input(train_config, input_config, model_config, model=model, input_context=input_context)
    finally:
        builders["dataset_build"] = original


def _cacheable(input_config, log) -> bool:
    """Whether the training records are plain TFRecords of tf.Examples that fit the cache."""
    from object_detection.protos import input_reader_pb2

    if input_config.WhichOneof("input_reader") != "tf_record_input_reader":
        return False
    if input_config.input_type == input_reader_pb2.InputType.Value("TF_SEQUENCE_EXAMPLE"):
        return False
    if input_config.sample_from_datasets_weights:
        return False
    files = _files(input_config)
    size = sum(tf.io.gfile.stat(name).length for name in files)
    if size > CACHE_MAX_RECORD_BYTES:
        log(
            f"input: training records {size / 1e6:.0f} MB, more than the {CACHE_MAX_RECORD_BYTES / 1e6:.0f} MB whose "
            "decoded images are kept in memory; decoding every image every epoch"
        )
        return False
    log(f"input: decoding the training records ({size / 1e6:.1f} MB) once, kept in memory; augmentation per step")
    return True


def _files(input_config) -> list[str]:
    patterns = list(input_config.tf_record_input_reader.input_path)
    return [name for pattern in patterns for name in sorted(tf.io.gfile.glob(pattern))]


def _build_cached(
    input_config, batch_size=None, transform_input_data_fn=None, input_context=None, reduce_to_frame_fn=None
):
    """TFOD's dataset_builder.build with the decoded records cached before the shuffle and repeat (which TFOD
    applies to the raw records). The maps are TFOD's own (`map_with_legacy_function` with
    batch_size x num_parallel_batches calls), so a seeded run draws its augmentation the same way."""
    from object_detection.builders import dataset_builder, decoder_builder

    decoder = decoder_builder.build(input_config)
    files = _files(input_config)
    parallel = batch_size * input_config.num_parallel_batches if batch_size else input_config.num_parallel_map_calls

    def map_fn(dataset, function, *_args, **_keywords):
        return dataset.map_with_legacy_function(function, num_parallel_calls=parallel)

    filenames = tf.compat.v1.data.Dataset.from_tensor_slices(files)
    shard = dataset_builder.shard_function_for_context(input_context)
    if shard:
        filenames = shard(filenames)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    records = filenames.interleave(
        lambda name: tf.compat.v1.data.TFRecordDataset(name, buffer_size=RECORD_BUFFER_BYTES),
        cycle_length=max(1, min(input_config.num_readers, len(files))),
        block_length=input_config.read_block_length,
    )
    if input_config.sample_1_of_n_examples > 1:
        records = records.shard(input_config.sample_1_of_n_examples, 0)
    dataset = map_fn(records, decoder.decode)
    if reduce_to_frame_fn:
        dataset = reduce_to_frame_fn(dataset, map_fn, batch_size, input_config)
    dataset = dataset.cache()
    if input_config.shuffle:
        dataset = dataset.shuffle(input_config.shuffle_buffer_size, reshuffle_each_iteration=True)
    dataset = dataset.repeat(input_config.num_epochs or None)
    if transform_input_data_fn is not None:
        dataset = map_fn(dataset, transform_input_data_fn)
    if batch_size:
        dataset = dataset.batch(batch_size, drop_remainder=input_config.drop_remainder)
    return dataset.prefetch(input_config.num_prefetch_batches)

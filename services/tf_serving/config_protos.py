"""TF Serving's config messages as Python classes, to read, check and rewrite the text protos.

ModelServerConfig comes from tensorflow-serving-api itself. BatchingParameters and
MonitoringConfig are missing from that wheel (it has no monitoring_config_pb2 and no
session_bundle_config_pb2), so they are declared below with the same package, message
names, field names, numbers and types as TF Serving's own files:
  tensorflow_serving/servables/tensorflow/session_bundle_config.proto (BatchingParameters)
  tensorflow_serving/config/monitoring_config.proto (PrometheusConfig, MonitoringConfig)
as of tensorflow/serving commit 9d981c5c2708d23c5407c7c1e30309e6f9798874. text_format then
accepts exactly what tensorflow_model_server accepts for these messages.

They are built as descriptors in Python, not compiled with grpc_tools' protoc: protoc
crashes (segfault) in a process that has imported TensorFlow. A private descriptor pool
keeps them from clashing with any other copy of the same names.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message,
    message_factory,
    text_format,
    wrappers_pb2,
)

_PACKAGE = "tensorflow.serving"
_FILE_NAME = "digitnet/tf_serving_config_mirror.proto"
_Field = descriptor_pb2.FieldDescriptorProto
_INT64 = ".google.protobuf.Int64Value"
_STRING = ".google.protobuf.StringValue"
_BOOL = ".google.protobuf.BoolValue"

# (message, [(field, number, type, label, message type name)]), as in TF Serving's .proto files.
_MIRRORED = [
    (
        "BatchingParameters",
        [
            ("max_batch_size", 1, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _INT64),
            ("batch_timeout_micros", 2, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _INT64),
            ("max_enqueued_batches", 3, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _INT64),
            ("num_batch_threads", 4, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _INT64),
            ("thread_pool_name", 5, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _STRING),
            ("allowed_batch_sizes", 6, _Field.TYPE_INT64, _Field.LABEL_REPEATED, None),
            ("pad_variable_length_inputs", 7, _Field.TYPE_BOOL, _Field.LABEL_OPTIONAL, None),
            ("enable_large_batch_splitting", 8, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _BOOL),
            ("max_execution_batch_size", 9, _Field.TYPE_MESSAGE, _Field.LABEL_OPTIONAL, _INT64),
        ],
    ),
    (
        "PrometheusConfig",
        [
            ("enable", 1, _Field.TYPE_BOOL, _Field.LABEL_OPTIONAL, None),
            ("path", 2, _Field.TYPE_STRING, _Field.LABEL_OPTIONAL, None),
        ],
    ),
    (
        "MonitoringConfig",
        [
            (
                "prometheus_config",
                1,
                _Field.TYPE_MESSAGE,
                _Field.LABEL_OPTIONAL,
                f".{_PACKAGE}.PrometheusConfig",
            ),
        ],
    ),
]


@dataclass(frozen=True)
class ConfigMessages:
    """The message class behind each config file TF Serving reads."""

    model_server_config: type[message.Message]
    batching_parameters: type[message.Message]
    monitoring_config: type[message.Message]


def _mirror_file() -> descriptor_pb2.FileDescriptorProto:
    file_proto = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME,
        package=_PACKAGE,
        syntax="proto3",
        dependency=[wrappers_pb2.DESCRIPTOR.name],
    )
    for message_name, fields in _MIRRORED:
        message_proto = file_proto.message_type.add(name=message_name)
        for name, number, field_type, label, type_name in fields:
            field = message_proto.field.add(
                name=name, number=number, type=field_type, label=label, json_name=_camel(name)
            )
            if type_name:
                field.type_name = type_name
    return file_proto


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@functools.cache
def config_messages() -> ConfigMessages:
    """The three message classes (built once per process)."""
    from tensorflow_serving.config import model_server_config_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    pool.Add(_mirror_file())

    def mirrored(name: str) -> type[message.Message]:
        return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))

    return ConfigMessages(
        model_server_config=model_server_config_pb2.ModelServerConfig,
        batching_parameters=mirrored("BatchingParameters"),
        monitoring_config=mirrored("MonitoringConfig"),
    )


def parse_text_proto(path: Path, message_class: type[message.Message]) -> message.Message:
    """Parses a text proto file the way tensorflow_model_server does (unknown fields fail).

    Raises:
        google.protobuf.text_format.ParseError: naming the line of the first problem.
    """
    return text_format.Parse(path.read_text(), message_class())


def write_text_proto(msg: message.Message, path: Path, header: str = "") -> Path:
    """Writes `msg` as a text proto, after an optional '#' comment header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + text_format.MessageToString(msg))
    return path

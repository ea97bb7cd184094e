"""The descriptor pool of nnserve's generated gRPC modules: its own, not protobuf's default one, so that they load
in a process that has also loaded another copy of the protocol (tritonclient's, in the tests) without a clash of
message names. ``generate.py`` points the generated modules at it."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()

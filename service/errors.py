"""Every failure nnserve reports, one exception type each, carrying its HTTP status and a stable ``code``.

    NNServeError                         (status, code, message)
    ├── MalformedRequest         400  malformed_request       unparsable JSON, missing or wrong-typed fields
    ├── InvalidShape             400  invalid_shape           expected vs received shape, ragged arrays, empty
    ├── InvalidDatatype          400  invalid_datatype        expected vs received dtype
    ├── InvalidValue             400  invalid_value           NaN/inf, pixel values out of range
    ├── InvalidImage             422  invalid_image           not an image, truncated, unsupported format
    ├── ImageTooLarge            422  image_too_large         dimensions over the limit (decompression bombs)
    ├── InvalidSharedMemory      400  invalid_shared_memory   a region unknown, out of bounds, or its object gone
    ├── Unauthorized             401  unauthorized            admin endpoints without the bearer token
    ├── Forbidden                403  forbidden               shared memory registered from another host
    ├── ModelNotFound            404  model_not_found
    ├── VersionNotFound          404  version_not_found
    ├── SharedMemoryNotFound     404  shared_memory_not_found  a shared memory region not registered
    ├── AlreadyExists            409  already_exists          a shared memory region registered twice
    ├── SampleNotFound           404  sample_not_found        a sample file a version does not publish
    ├── PayloadTooLarge          413  payload_too_large       body over the limit
    ├── UnsupportedMediaType     415  unsupported_media_type
    ├── Overloaded               429  overloaded              queue full; carries Retry-After
    ├── ModelLoadFailed          400  model_load_failed       repository load of a broken model
    ├── InferenceFailed          500  inference_failed        onnxruntime raised on a valid batch
    ├── NotReady                 503  not_ready               model or server not (yet/any more) ready
    └── DeadlineExceeded         504  deadline_exceeded       waited in the queue past the request's deadline

The single handler in ``service.protocols.http_errors`` turns any of them into ``{"error": message, "code": code}``.
"""

from __future__ import annotations


class NNServeError(Exception):
    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class MalformedRequest(NNServeError):
    status, code = 400, "malformed_request"


class InvalidShape(NNServeError):
    status, code = 400, "invalid_shape"


class InvalidDatatype(NNServeError):
    status, code = 400, "invalid_datatype"


class InvalidValue(NNServeError):
    status, code = 400, "invalid_value"


class InvalidImage(NNServeError):
    status, code = 422, "invalid_image"


class ImageTooLarge(NNServeError):
    status, code = 422, "image_too_large"


class InvalidSharedMemory(NNServeError):
    status, code = 400, "invalid_shared_memory"


class Forbidden(NNServeError):
    status, code = 403, "forbidden"


class Unauthorized(NNServeError):
    status, code = 401, "unauthorized"

    def __init__(self, message: str = "admin endpoint: missing or wrong bearer token") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class ModelNotFound(NNServeError):
    status, code = 404, "model_not_found"


class VersionNotFound(NNServeError):
    status, code = 404, "version_not_found"


class SharedMemoryNotFound(NNServeError):
    status, code = 404, "shared_memory_not_found"


class AlreadyExists(NNServeError):
    status, code = 409, "already_exists"


class SampleNotFound(NNServeError):
    status, code = 404, "sample_not_found"


class PayloadTooLarge(NNServeError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(NNServeError):
    status, code = 415, "unsupported_media_type"


class Overloaded(NNServeError):
    status, code = 429, "overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class ModelLoadFailed(NNServeError):
    status, code = 400, "model_load_failed"


class InferenceFailed(NNServeError):
    status, code = 500, "inference_failed"


class NotReady(NNServeError):
    status, code = 503, "not_ready"


class DeadlineExceeded(NNServeError):
    status, code = 504, "deadline_exceeded"


class ClientGone(Exception):
    """The client disconnected (or cancelled) before its request was read or answered: nobody to answer."""


# Which rejection reason (metric label) each error counts as; anything else 4xx is "invalid".
def rejection_reason(error: NNServeError) -> str | None:
    if isinstance(error, Overloaded):
        return "overload"
    if isinstance(error, DeadlineExceeded):
        return "timeout"
    if 400 <= error.status < 500 and not isinstance(error, (ModelNotFound, VersionNotFound, Unauthorized)):
        return "invalid"
    return None

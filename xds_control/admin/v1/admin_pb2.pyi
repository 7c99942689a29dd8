from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackendState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BACKEND_STATE_UNSPECIFIED: _ClassVar[BackendState]
    BACKEND_STATE_UNKNOWN: _ClassVar[BackendState]
    BACKEND_STATE_HEALTHY: _ClassVar[BackendState]
    BACKEND_STATE_DEGRADED: _ClassVar[BackendState]
    BACKEND_STATE_UNHEALTHY: _ClassVar[BackendState]
    BACKEND_STATE_UNAUTHENTICATED: _ClassVar[BackendState]

class BreakerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BREAKER_STATE_UNSPECIFIED: _ClassVar[BreakerState]
    BREAKER_STATE_CLOSED: _ClassVar[BreakerState]
    BREAKER_STATE_OPEN: _ClassVar[BreakerState]
    BREAKER_STATE_HALF_OPEN: _ClassVar[BreakerState]
BACKEND_STATE_UNSPECIFIED: BackendState
BACKEND_STATE_UNKNOWN: BackendState
BACKEND_STATE_HEALTHY: BackendState
BACKEND_STATE_DEGRADED: BackendState
BACKEND_STATE_UNHEALTHY: BackendState
BACKEND_STATE_UNAUTHENTICATED: BackendState
BREAKER_STATE_UNSPECIFIED: BreakerState
BREAKER_STATE_CLOSED: BreakerState
BREAKER_STATE_OPEN: BreakerState
BREAKER_STATE_HALF_OPEN: BreakerState

class Endpoint(_message.Message):
    __slots__ = ("url", "state", "last_probe_ms", "last_error", "address")
    URL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    url: str
    state: BackendState
    last_probe_ms: float
    last_error: str
    address: str
    def __init__(self, url: _Optional[str] = ..., state: _Optional[_Union[BackendState, str]] = ..., last_probe_ms: _Optional[float] = ..., last_error: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class Backend(_message.Message):
    __slots__ = ("name", "state", "breaker", "drained", "routable", "consecutive_failures", "consecutive_successes", "last_probe_ms", "last_success", "last_error", "retry_after", "state_since", "catalog_hash", "catalog_json", "tool_count", "endpoints")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    BREAKER_FIELD_NUMBER: _ClassVar[int]
    DRAINED_FIELD_NUMBER: _ClassVar[int]
    ROUTABLE_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_FAILURES_FIELD_NUMBER: _ClassVar[int]
    CONSECUTIVE_SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    LAST_PROBE_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_SUCCESS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    STATE_SINCE_FIELD_NUMBER: _ClassVar[int]
    CATALOG_HASH_FIELD_NUMBER: _ClassVar[int]
    CATALOG_JSON_FIELD_NUMBER: _ClassVar[int]
    TOOL_COUNT_FIELD_NUMBER: _ClassVar[int]
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: BackendState
    breaker: BreakerState
    drained: bool
    routable: bool
    consecutive_failures: int
    consecutive_successes: int
    last_probe_ms: float
    last_success: float
    last_error: str
    retry_after: float
    state_since: float
    catalog_hash: str
    catalog_json: str
    tool_count: int
    endpoints: _containers.RepeatedCompositeFieldContainer[Endpoint]
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[BackendState, str]] = ..., breaker: _Optional[_Union[BreakerState, str]] = ..., drained: _Optional[bool] = ..., routable: _Optional[bool] = ..., consecutive_failures: _Optional[int] = ..., consecutive_successes: _Optional[int] = ..., last_probe_ms: _Optional[float] = ..., last_success: _Optional[float] = ..., last_error: _Optional[str] = ..., retry_after: _Optional[float] = ..., state_since: _Optional[float] = ..., catalog_hash: _Optional[str] = ..., catalog_json: _Optional[str] = ..., tool_count: _Optional[int] = ..., endpoints: _Optional[_Iterable[_Union[Endpoint, _Mapping]]] = ...) -> None: ...

class ListBackendsRequest(_message.Message):
    __slots__ = ("omit_catalogs", "page_token")
    OMIT_CATALOGS_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    omit_catalogs: bool
    page_token: str
    def __init__(self, omit_catalogs: _Optional[bool] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListBackendsResponse(_message.Message):
    __slots__ = ("version", "backends", "next_page_token")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    version: int
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    next_page_token: str
    def __init__(self, version: _Optional[int] = ..., backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetBackendRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetBackendResponse(_message.Message):
    __slots__ = ("version", "backend")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    version: int
    backend: Backend
    def __init__(self, version: _Optional[int] = ..., backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("omit_catalogs",)
    OMIT_CATALOGS_FIELD_NUMBER: _ClassVar[int]
    omit_catalogs: bool
    def __init__(self, omit_catalogs: _Optional[bool] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("version", "backends", "more")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKENDS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    version: int
    backends: _containers.RepeatedCompositeFieldContainer[Backend]
    more: bool
    def __init__(self, version: _Optional[int] = ..., backends: _Optional[_Iterable[_Union[Backend, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class ProbeNowRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ProbeNowResponse(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    def __init__(self, backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class DrainRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DrainResponse(_message.Message):
    __slots__ = ("version", "backend")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    version: int
    backend: Backend
    def __init__(self, version: _Optional[int] = ..., backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class UndrainRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class UndrainResponse(_message.Message):
    __slots__ = ("version", "backend")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    version: int
    backend: Backend
    def __init__(self, version: _Optional[int] = ..., backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class ResetBreakerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ResetBreakerResponse(_message.Message):
    __slots__ = ("backend",)
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    backend: Backend
    def __init__(self, backend: _Optional[_Union[Backend, _Mapping]] = ...) -> None: ...

class ListNodesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TypeStatus(_message.Message):
    __slots__ = ("type_url", "acked_version", "nacked_version", "nack_detail")
    TYPE_URL_FIELD_NUMBER: _ClassVar[int]
    ACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    NACKED_VERSION_FIELD_NUMBER: _ClassVar[int]
    NACK_DETAIL_FIELD_NUMBER: _ClassVar[int]
    type_url: str
    acked_version: str
    nacked_version: str
    nack_detail: str
    def __init__(self, type_url: _Optional[str] = ..., acked_version: _Optional[str] = ..., nacked_version: _Optional[str] = ..., nack_detail: _Optional[str] = ...) -> None: ...

class Node(_message.Message):
    __slots__ = ("node_id", "cluster", "connected_since", "types", "role")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    CONNECTED_SINCE_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    cluster: str
    connected_since: float
    types: _containers.RepeatedCompositeFieldContainer[TypeStatus]
    role: str
    def __init__(self, node_id: _Optional[str] = ..., cluster: _Optional[str] = ..., connected_since: _Optional[float] = ..., types: _Optional[_Iterable[_Union[TypeStatus, _Mapping]]] = ..., role: _Optional[str] = ...) -> None: ...

class ListNodesResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[Node]
    def __init__(self, nodes: _Optional[_Iterable[_Union[Node, _Mapping]]] = ...) -> None: ...

class BackendOutcome(_message.Message):
    __slots__ = ("backend", "successes", "failures", "last_failure_category")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    SUCCESSES_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    backend: str
    successes: int
    failures: int
    last_failure_category: str
    def __init__(self, backend: _Optional[str] = ..., successes: _Optional[int] = ..., failures: _Optional[int] = ..., last_failure_category: _Optional[str] = ...) -> None: ...

class ReportOutcomesRequest(_message.Message):
    __slots__ = ("outcomes",)
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    outcomes: _containers.RepeatedCompositeFieldContainer[BackendOutcome]
    def __init__(self, outcomes: _Optional[_Iterable[_Union[BackendOutcome, _Mapping]]] = ...) -> None: ...

class ReportOutcomesResponse(_message.Message):
    __slots__ = ("unknown_backends",)
    UNKNOWN_BACKENDS_FIELD_NUMBER: _ClassVar[int]
    unknown_backends: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, unknown_backends: _Optional[_Iterable[str]] = ...) -> None: ...

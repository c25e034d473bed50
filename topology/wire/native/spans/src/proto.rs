//! The OTLP trace messages, compact: only the fields the TRACE stage reads, with the field numbers of
//! opentelemetry-proto (the same compact schema as `topology.wire.otlp.spans_view`). Ids, resources
//! and attributes stay raw bytes (slices of the request, no copy); prost skips every other field.
use bytes::Bytes;

#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(bytes = "bytes", tag = "1")]
    pub resource: Bytes,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "bytes", tag = "1")]
    pub trace_id: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub span_id: Bytes,
    #[prost(bytes = "bytes", tag = "4")]
    pub parent_span_id: Bytes,
    /// A string in the schema: checked to be UTF-8 after decoding (no copy).
    #[prost(bytes = "bytes", tag = "5")]
    pub name: Bytes,
    #[prost(int32, tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(bytes = "bytes", repeated, tag = "9")]
    pub attributes: Vec<Bytes>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(int32, tag = "3")]
    pub code: i32,
}

// -- a Resource and a KeyValue, decoded where a name is read from them (the full schema's fields) --
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
    #[prost(uint32, tag = "2")]
    pub dropped_attributes_count: u32,
    #[prost(message, repeated, tag = "3")]
    pub entity_refs: Vec<EntityRef>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EntityRef {
    #[prost(string, tag = "1")]
    pub schema_url: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(string, repeated, tag = "3")]
    pub id_keys: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub description_keys: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
    #[prost(int32, tag = "3")]
    pub key_strindex: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4, 5, 6, 7, 8")]
    pub value: Option<Value>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
    #[prost(message, tag = "5")]
    ArrayValue(ArrayValue),
    #[prost(message, tag = "6")]
    KvlistValue(KeyValueList),
    #[prost(bytes = "vec", tag = "7")]
    BytesValue(Vec<u8>),
    #[prost(int32, tag = "8")]
    StringValueStrindex(i32),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<AnyValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValueList {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<KeyValue>,
}

// -- the request as its parts, each span kept as its bytes: cutting a request by trace id --------------
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<RawResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawResourceSpans {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub resource: Option<Bytes>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<RawScopeSpans>,
    #[prost(bytes = "bytes", tag = "3")]
    pub schema_url: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RawScopeSpans {
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub scope: Option<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub spans: Vec<Bytes>,
    #[prost(bytes = "bytes", tag = "3")]
    pub schema_url: Bytes,
}

/// A span's trace id, every other field skipped.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SpanTraceId {
    #[prost(bytes = "bytes", tag = "1")]
    pub trace_id: Bytes,
}

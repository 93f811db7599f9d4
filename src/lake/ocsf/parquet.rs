//! OCSF events → Apache Parquet, one class per file, the OCSF attributes as nested Parquet types
//! (structs, lists, a `map<string,string>` for `unmapped`), so Athena, Spark, DuckDB and Security
//! Lake's crawler read them without a custom SerDe.
//!
//! Each class has one Arrow schema: the attributes the connector's mappings fill, with the
//! types of the OCSF dictionary (`integer_t` → int32, `long_t`/`timestamp_t` → int64, objects →
//! structs, arrays → lists). Events are decoded into it in strict mode, so an attribute a
//! mapping emits but the schema lacks is an error in the tests, never a silently dropped value.

use super::Class;
use arrow_schema::{ArrowError, DataType, Field, Fields, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde_json::Value;
use std::sync::Arc;

/// Rows decoded (and so held as Arrow arrays) at a time.
pub const DECODE_ROWS: usize = 4096;
/// Rows per Parquet row group: bounds the writer's memory, and still lets readers skip groups
/// by their `time` statistics.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// zstd level: 9, as these files are written once and read many times.
const ZSTD_LEVEL: i32 = 9;

/// A failure to encode events.
#[derive(Debug, thiserror::Error)]
pub enum ParquetEncodeError {
    /// An event does not fit its class's schema (a mapping bug).
    #[error("an OCSF {class} event does not fit the Parquet schema: {source}")]
    Schema {
        /// The class.
        class: &'static str,
        /// What Arrow said.
        #[source]
        source: ArrowError,
    },
    /// The Parquet writer failed.
    #[error("writing Parquet failed: {0}")]
    Write(#[from] ParquetError),
}

fn utf8(name: &str) -> Field {
    Field::new(name, DataType::Utf8, true)
}
fn int(name: &str) -> Field {
    Field::new(name, DataType::Int32, true)
}
fn long(name: &str) -> Field {
    Field::new(name, DataType::Int64, true)
}
fn object(name: &str, fields: Vec<Field>) -> Field {
    Field::new(name, DataType::Struct(Fields::from(fields)), true)
}
fn strings(name: &str) -> Field {
    Field::new_list(name, Field::new_list_field(DataType::Utf8, true), true)
}

fn user(name: &str) -> Field {
    object(
        name,
        vec![
            utf8("name"),
            utf8("uid"),
            utf8("domain"),
            utf8("email_addr"),
        ],
    )
}

fn metadata() -> Field {
    object(
        "metadata",
        vec![
            utf8("version"),
            utf8("uid"),
            object(
                "product",
                vec![
                    utf8("name"),
                    utf8("vendor_name"),
                    object("feature", vec![utf8("name")]),
                ],
            ),
            utf8("original_time"),
            utf8("event_code"),
            utf8("log_name"),
            utf8("log_provider"),
            long("processed_time"),
            long("logged_time"),
            strings("profiles"),
        ],
    )
}

/// The attributes every class has (base event, `host` profile), in the order readers see.
fn common(class: Class) -> Vec<Field> {
    vec![
        long("time"),
        int("class_uid"),
        utf8("class_name"),
        int("category_uid"),
        utf8("category_name"),
        int("activity_id"),
        utf8("activity_name"),
        long("type_uid"),
        utf8("type_name"),
        int("severity_id"),
        utf8("severity"),
        int("status_id"),
        utf8("status"),
        utf8("status_code"),
        utf8("status_detail"),
        utf8("message"),
        metadata(),
        device(class),
        object("actor", vec![user("user")]),
    ]
}

/// `device`: findings name the affected host by agent GUID and address too.
fn device(class: Class) -> Field {
    let mut fields = vec![utf8("hostname")];
    if class.category_uid() == 2 {
        fields.extend([utf8("uid"), utf8("ip")]);
    }
    fields.extend([int("type_id"), utf8("type")]);
    object("device", fields)
}

/// An `analytic` (a detection rule or model).
fn analytic_fields() -> Vec<Field> {
    vec![
        utf8("uid"),
        utf8("name"),
        int("type_id"),
        utf8("type"),
        utf8("category"),
    ]
}

/// A list of objects.
fn objects(name: &str, fields: Vec<Field>) -> Field {
    Field::new_list(
        name,
        Field::new_list_field(DataType::Struct(Fields::from(fields)), true),
        true,
    )
}

fn src_endpoint() -> Field {
    object(
        "src_endpoint",
        vec![utf8("ip"), int("port"), utf8("name"), utf8("hostname")],
    )
}

/// The attributes of `class` the mappings fill.
fn class_fields(class: Class) -> Vec<Field> {
    match class.uid {
        3002 => vec![
            user("user"),
            int("logon_type_id"),
            utf8("logon_type"),
            int("auth_protocol_id"),
            utf8("auth_protocol"),
            src_endpoint(),
            object("service", vec![utf8("name")]),
            object("session", vec![utf8("uid")]),
        ],
        3001 => vec![user("user")],
        3003 | 3005 => vec![user("user"), strings("privileges")],
        3004 => vec![object(
            "entity",
            vec![utf8("name"), utf8("type"), utf8("uid")],
        )],
        3006 => vec![
            object("group", vec![utf8("name"), utf8("uid"), utf8("domain")]),
            user("user"),
        ],
        2004 => {
            let entity = |name: &str| object(name, vec![utf8("uid"), utf8("name")]);
            vec![
                object(
                    "finding_info",
                    vec![
                        utf8("uid"),
                        utf8("title"),
                        utf8("desc"),
                        long("created_time"),
                        long("modified_time"),
                        long("first_seen_time"),
                        long("last_seen_time"),
                        utf8("src_url"),
                        object("analytic", analytic_fields()),
                        objects("related_analytics", analytic_fields()),
                        objects(
                            "attacks",
                            vec![
                                entity("tactic"),
                                entity("technique"),
                                entity("sub_technique"),
                                utf8("version"),
                            ],
                        ),
                    ],
                ),
                int("risk_score"),
                int("risk_level_id"),
                utf8("risk_level"),
                objects(
                    "observables",
                    vec![utf8("name"), int("type_id"), utf8("type"), utf8("value")],
                ),
                objects("resources", vec![utf8("uid"), utf8("name"), utf8("type")]),
            ]
        }
        6003 => vec![
            object(
                "api",
                vec![utf8("operation"), object("service", vec![utf8("name")])],
            ),
            src_endpoint(),
        ],
        _ => vec![],
    }
}

/// The Parquet (Arrow) schema of one class's events.
pub fn schema(class: Class) -> SchemaRef {
    let mut fields = common(class);
    fields.extend(class_fields(class));
    // Large and rarely filtered on: last, so readers that project columns skip them cheaply.
    fields.push(Field::new_map(
        "unmapped",
        "entries",
        Field::new("key", DataType::Utf8, false),
        utf8("value"),
        false,
        true,
    ));
    fields.push(utf8("raw_data"));
    Arc::new(Schema::new(fields))
}

/// The Hive (Glue, Athena) type of an Arrow type of [`schema`].
fn hive_type(t: &DataType) -> String {
    match t {
        DataType::Utf8 => "string".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Struct(fields) => format!(
            "struct<{}>",
            fields
                .iter()
                .map(|f| format!("{}:{}", f.name(), hive_type(f.data_type())))
                .collect::<Vec<_>>()
                .join(",")
        ),
        DataType::List(item) => format!("array<{}>", hive_type(item.data_type())),
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) => format!(
                "map<{},{}>",
                hive_type(kv[0].data_type()),
                hive_type(kv[1].data_type())
            ),
            other => unreachable!("map entries are a struct, not {other}"),
        },
        other => unreachable!("the schema uses no {other}"),
    }
}

/// The columns of a Glue table over one class's Parquet objects: `(name, Hive type)`, in
/// file order. `infra/template.yaml` declares these; `tests/infra.rs` holds them equal.
pub fn hive_columns(class: Class) -> Vec<(String, String)> {
    schema(class)
        .fields()
        .iter()
        .map(|f| (f.name().clone(), hive_type(f.data_type())))
        .collect()
}

/// Writer settings. Objects are as small as a segment or a batch, so what every file carries
/// counts: no embedded Arrow schema (readers take the Parquet schema; it adds kilobytes per
/// file), statistics per column chunk only (no page index) and cut to 64 bytes, and no
/// dictionary for the columns whose values are (nearly) all distinct: `raw_data`,
/// `metadata.uid` and the times. A dictionary of distinct values only adds an index per row:
/// without them the audit bench's Parquet is 4 % smaller (`docs/benchmarks.md`, note 15).
fn options() -> ArrowWriterOptions {
    let path = |p: &str| ColumnPath::from(p.split('.').map(str::to_owned).collect::<Vec<_>>());
    let distinct = [
        "raw_data",
        "metadata.uid",
        "time",
        "metadata.original_time",
        "metadata.logged_time",
        "metadata.processed_time",
    ]
    .map(path);
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("a zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("time"), EnabledStatistics::Chunk)
        .set_statistics_truncate_length(Some(64));
    for column in distinct {
        properties = properties.set_column_dictionary_enabled(column, false);
    }
    ArrowWriterOptions::new()
        .with_properties(properties.build())
        .with_skip_arrow_metadata(true)
}

/// One Parquet file being written: events go in a chunk at a time (decoded into Arrow arrays,
/// then into the current row group), so memory holds one chunk and one row group, not the file's
/// events.
pub struct Encoder {
    class: Class,
    decoder: arrow_json::reader::Decoder,
    writer: ArrowWriter<Vec<u8>>,
    rows: usize,
}

impl Encoder {
    /// An empty file for events of `class`.
    pub fn new(class: Class) -> Result<Self, ParquetEncodeError> {
        let schema = schema(class);
        let decoder = arrow_json::ReaderBuilder::new(schema.clone())
            .with_strict_mode(true)
            .build_decoder()
            .map_err(|source| ParquetEncodeError::Schema {
                class: class.name,
                source,
            })?;
        let writer = ArrowWriter::try_new_with_options(Vec::new(), schema, options())?;
        Ok(Encoder {
            class,
            decoder,
            writer,
            rows: 0,
        })
    }

    /// Appends events of the encoder's class, in the order to write them.
    pub fn push(&mut self, events: &[Value]) -> Result<(), ParquetEncodeError> {
        let bad = |source| ParquetEncodeError::Schema {
            class: self.class.name,
            source,
        };
        for chunk in events.chunks(DECODE_ROWS) {
            self.decoder.serialize(chunk).map_err(bad)?;
            if let Some(batch) = self.decoder.flush().map_err(bad)? {
                self.writer.write(&batch)?;
            }
        }
        self.rows += events.len();
        Ok(())
    }

    /// Events so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The file's bytes.
    pub fn finish(self) -> Result<Bytes, ParquetEncodeError> {
        Ok(Bytes::from(self.writer.into_inner()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, Int64Array, StringArray, StructArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use serde_json::json;

    /// `events` (all of `class`) as one Parquet file.
    fn encode(class: Class, events: &[Value]) -> Result<Bytes, ParquetEncodeError> {
        let mut enc = Encoder::new(class)?;
        enc.push(events)?;
        enc.finish()
    }

    #[test]
    fn events_round_trip_with_nested_types_and_zstd() {
        let events: Vec<Value> = (0..10)
            .map(|i| {
                json!({"time": 1_795_255_200_000i64 + i, "class_uid": 3002, "category_uid": 3, "activity_id": 1,
                    "type_uid": 300201, "severity_id": 1, "metadata": {"version": "1.1.0", "uid": format!("u{i}"),
                    "product": {"name": "Microsoft Windows", "vendor_name": "Microsoft"}, "profiles": ["host"]},
                    "user": {"name": "alice"}, "unmapped": {"agent_id": "dc01"}, "raw_data": "{}"})
            })
            .collect();
        let bytes = encode(super::super::AUTHENTICATION, &events).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes.clone()).unwrap();
        let meta = reader.metadata().clone();
        assert_eq!(meta.file_metadata().num_rows(), 10);
        let column = meta.row_group(0).column(0);
        assert!(matches!(column.compression(), Compression::ZSTD(_)));
        let batch = reader.build().unwrap().next().unwrap().unwrap();
        let time = batch.column_by_name("time").unwrap();
        assert_eq!(
            time.as_any().downcast_ref::<Int64Array>().unwrap().value(9),
            1_795_255_200_009
        );
        let user = batch.column_by_name("user").unwrap();
        let name = user
            .as_any()
            .downcast_ref::<StructArray>()
            .unwrap()
            .column_by_name("name")
            .unwrap();
        assert_eq!(
            name.as_any()
                .downcast_ref::<StringArray>()
                .unwrap()
                .value(0),
            "alice"
        );
        assert!(batch.column_by_name("group").is_none());
        assert_eq!(batch.column_by_name("actor").unwrap().null_count(), 10);
    }

    #[test]
    fn an_attribute_outside_the_schema_is_an_error_not_a_dropped_value() {
        let e = json!({"time": 1, "class_uid": 3001, "user": {"name": "bob", "nickname": "b"}});
        let err = encode(super::super::ACCOUNT_CHANGE, &[e]).unwrap_err();
        assert!(err.to_string().contains("nickname"), "{err}");
    }
}

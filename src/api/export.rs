//! The wire side of export (`GET /execution-logs/export`, `GET /runs/export`): the format a
//! caller asked for, and the rows of a walk written as NDJSON or CSV into a streamed body.

use std::io;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use poem::{Body, IntoResponse, Request, Response};
use poem_openapi::registry::{
    MetaHeader, MetaMediaType, MetaResponse, MetaResponses, MetaSchema, MetaSchemaRef, Registry,
};
use poem_openapi::types::Type;
use poem_openapi::{ApiResponse, Enum};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::service::export::BatchSize;
use crate::service::ServiceError;
use crate::telemetry::metrics::Metrics;

const NDJSON: &str = "application/x-ndjson";
const CSV: &str = "text/csv";

/// How an export is written.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`), each the same as in the list.
    Ndjson,
    /// RFC 4180 CSV (`text/csv`) with a header row of the list's field names; JSON fields as
    /// JSON text, null as an empty field.
    Csv,
}

impl ExportFormat {
    /// `format` when given, else the first of `Accept`'s types that names one (`text/csv`,
    /// `application/x-ndjson`), else NDJSON.
    fn chosen(format: Option<Self>, request: &Request) -> Self {
        if let Some(format) = format {
            return format;
        }
        let accept = request.header("accept").unwrap_or_default();
        accept
            .split(',')
            .filter_map(
                |range| match range.split(';').next().unwrap_or_default().trim() {
                    media if media.eq_ignore_ascii_case(CSV) => Some(Self::Csv),
                    media if media.eq_ignore_ascii_case(NDJSON) => Some(Self::Ndjson),
                    _ => None,
                },
            )
            .next()
            .unwrap_or(Self::Ndjson)
    }
}

/// 200 with every row of an export, streamed as it is read. `T` is the list's row type.
pub struct Export<T> {
    format: ExportFormat,
    /// The file name offered to a browser, without extension (e.g. `execution-logs`).
    name: &'static str,
    body: Body,
    row: std::marker::PhantomData<T>,
}

impl<T: Type + Serialize + Send + 'static> Export<T> {
    /// Writes the rows of `walk` in the format the caller asked for (`format`, else
    /// `request`'s `Accept`), telling the walk its batch size as the rows turn out; `table`
    /// labels the count of exported rows.
    ///
    /// The first batch is read before anything is sent, so that a refusal (403) or a database
    /// that does not answer (503) is a problem+json answer as usual. A failure after that can
    /// only cut the body short: the response ends without the end of its chunked encoding, which
    /// clients report as an incomplete transfer, never as a complete export.
    pub async fn of<M, S>(
        request: &Request,
        format: Option<ExportFormat>,
        name: &'static str,
        table: &'static str,
        metrics: &Metrics,
        walk: impl FnOnce(BatchSize) -> S,
    ) -> Result<Self, ApiError>
    where
        M: Into<T> + Send + 'static,
        S: Stream<Item = Result<Vec<M>, ServiceError>> + Send + 'static,
    {
        let format = ExportFormat::chosen(format, request);
        let (size, metrics) = (BatchSize::default(), metrics.clone());
        let mut rows = Box::pin(walk(size.clone()));
        let first = rows.next().await.transpose()?.unwrap_or_default();
        let mut writer = RowWriter::new::<T>(format);
        // The body is written after the request's task-local is gone; its lines keep its ids.
        let ids = crate::middleware::current_log_ids().unwrap_or_default();
        let batches = stream::once(async { Ok(first) }).chain(rows);
        let body = batches.map(move |batch| match batch {
            Ok(batch) => {
                let rows = batch.len() as u64;
                metrics.exported(table, rows);
                let chunk = writer.write(batch.into_iter().map(Into::into))?;
                size.observe(rows, chunk.len() as u64);
                Ok(chunk)
            }
            Err(err) => {
                let (request_id, trace_id) = &ids;
                tracing::error!(
                    error = %err,
                    table,
                    request_id,
                    trace_id,
                    "an export stopped: the database failed"
                );
                Err(io::Error::other("the export stopped"))
            }
        });
        Ok(Self {
            format,
            name,
            body: Body::from_bytes_stream(body),
            row: std::marker::PhantomData,
        })
    }
}

impl<T: Send> IntoResponse for Export<T> {
    fn into_response(self) -> Response {
        let (content_type, extension) = match self.format {
            ExportFormat::Ndjson => (NDJSON, "ndjson"),
            ExportFormat::Csv => ("text/csv; charset=utf-8; header=present", "csv"),
        };
        Response::builder()
            .content_type(content_type)
            .header(
                "Content-Disposition",
                format!("attachment; filename=\"{}.{extension}\"", self.name),
            )
            .body(self.body)
    }
}

impl<T: Type + Send> ApiResponse for Export<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Every matching row, newest first, streamed: NDJSON (each line one \
                              row as in the list) or CSV (a header row, then one row per line).",
                status: Some(200),
                status_range: None,
                content: vec![
                    MetaMediaType {
                        content_type: NDJSON,
                        schema: T::schema_ref(),
                    },
                    MetaMediaType {
                        content_type: CSV,
                        schema: MetaSchemaRef::Inline(Box::new(MetaSchema::new("string"))),
                    },
                ],
                headers: vec![MetaHeader {
                    name: "Content-Disposition".to_owned(),
                    description: Some("`attachment; filename=\"….ndjson\"` (or `.csv`)".to_owned()),
                    required: true,
                    deprecated: false,
                    schema: String::schema_ref(),
                }],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

/// Writes rows of one type into chunks of the body.
struct RowWriter {
    format: ExportFormat,
    /// CSV: the columns, in the order the document lists the row's fields; taken out (and
    /// written as the header row) with the first chunk.
    columns: Vec<&'static str>,
    header_written: bool,
}

impl RowWriter {
    fn new<T: Type>(format: ExportFormat) -> Self {
        Self {
            format,
            columns: columns_of::<T>(),
            header_written: false,
        }
    }

    fn write<T: Serialize>(&mut self, rows: impl Iterator<Item = T>) -> io::Result<Bytes> {
        let mut chunk = Vec::new();
        match self.format {
            ExportFormat::Ndjson => {
                for row in rows {
                    serde_json::to_writer(&mut chunk, &row)?;
                    chunk.push(b'\n');
                }
            }
            ExportFormat::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(&mut chunk);
                if !self.header_written {
                    csv.write_record(&self.columns)?;
                    self.header_written = true;
                }
                for row in rows {
                    csv.write_record(csv_fields(&row, &self.columns)?)?;
                }
                csv.flush()?;
            }
        }
        Ok(Bytes::from(chunk))
    }
}

/// The field names of the object type `T`, in the document's order.
fn columns_of<T: Type>() -> Vec<&'static str> {
    let mut registry = Registry::new();
    T::register(&mut registry);
    registry
        .schemas
        .get(&*T::name())
        .map(|schema| schema.properties.iter().map(|(name, _)| *name).collect())
        .unwrap_or_default()
}

/// One row as CSV fields, in `columns`' order: text as it is, null (or absent) as an empty
/// field, numbers and booleans as written in JSON, objects and arrays as JSON text.
fn csv_fields<T: Serialize>(row: &T, columns: &[&str]) -> io::Result<Vec<String>> {
    let json = serde_json::to_string(row)?;
    // Raw values, so that a JSON field is written exactly as the NDJSON line has it.
    let fields: std::collections::HashMap<&str, &RawValue> = serde_json::from_str(&json)?;
    columns
        .iter()
        .map(|column| match fields.get(column).map(|raw| raw.get()) {
            None | Some("null") => Ok(String::new()),
            Some(text) if text.starts_with('"') => Ok(serde_json::from_str::<String>(text)?),
            Some(other) => Ok(other.to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(poem_openapi::Object, Serialize)]
    #[oai(rename_all = "camelCase")]
    #[serde(rename_all = "camelCase")]
    struct Row {
        id: String,
        step_id: Option<String>,
        inputs: serde_json::Value,
        attempt: Option<i32>,
    }

    /// The CSV of `rows` written as one batch, then an empty batch after it.
    fn csv_of(rows: Vec<Row>) -> String {
        let mut writer = RowWriter::new::<Row>(ExportFormat::Csv);
        let mut bytes = writer.write(rows.into_iter()).expect("csv").to_vec();
        bytes.extend_from_slice(&writer.write(std::iter::empty::<Row>()).expect("csv"));
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn csv_has_one_header_then_rfc_4180_rows_with_json_fields_as_json_text() {
        let text = csv_of(vec![
            Row {
                id: "a".into(),
                step_id: Some("say \"hi\", then\nstop".into()),
                inputs: json!({"text": "x,y", "n": [1, 2]}),
                attempt: Some(2),
            },
            Row {
                id: "b".into(),
                step_id: None,
                inputs: json!({}),
                attempt: None,
            },
        ]);
        assert_eq!(
            text,
            "id,stepId,inputs,attempt\r\n\
             a,\"say \"\"hi\"\", then\nstop\",\"{\"\"n\"\":[1,2],\"\"text\"\":\"\"x,y\"\"}\",2\r\n\
             b,,{},\r\n"
        );
    }

    #[test]
    fn the_format_is_the_parameter_else_the_first_acceptable_type_else_ndjson() {
        let with_accept = |accept: &str| Request::builder().header("accept", accept).finish();
        let chosen = |format, accept| ExportFormat::chosen(format, &with_accept(accept));
        assert_eq!(chosen(None, "text/csv"), ExportFormat::Csv);
        assert_eq!(
            chosen(None, "application/x-ndjson, text/csv"),
            ExportFormat::Ndjson
        );
        assert_eq!(chosen(None, "text/html, TEXT/CSV;q=0.9"), ExportFormat::Csv);
        assert_eq!(chosen(None, "*/*"), ExportFormat::Ndjson);
        assert_eq!(chosen(None, ""), ExportFormat::Ndjson);
        assert_eq!(
            chosen(Some(ExportFormat::Ndjson), "text/csv"),
            ExportFormat::Ndjson
        );
        assert_eq!(chosen(Some(ExportFormat::Csv), ""), ExportFormat::Csv);
    }
}

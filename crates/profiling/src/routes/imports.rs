//! `/v1/profiling/imports`: bulk files of customers, products or events (NDJSON or CSV),
//! streamed into the database as they arrive and processed by a job.

use axum::{body::Body, extract::State, http::StatusCode};
use futures::StreamExt;
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::Problem,
    extract::{Json, Query},
    http::is_length_limit,
    jobs::{Job, NewJob, queue},
};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::import::{ImportFormat, ImportKind},
    jobs::{IMPORT, ImportPayload},
    state::AppState,
};

pub const TAG: &str = "imports";
/// Lines written to the database per statement while the upload streams in.
const CHUNK_LINES: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(start_import))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// What the file holds.
    pub kind: ImportKind,
    /// `ndjson` (one JSON object per line, the API's item shape) or `csv` (a header line;
    /// dotted columns such as `consent.email` nest; list columns split on `;`).
    pub format: ImportFormat,
}

/// Uploads a file and starts its import. The body streams to the database line by line
/// (files far larger than memory are fine); the job then validates every line like the
/// batch endpoints do and reports rejected lines with their number and reason.
#[utoipa::path(
    post, path = "/v1/profiling/imports", tag = TAG,
    params(ImportParams),
    request_body(content = String, description = "The file: NDJSON or CSV", content_type = "text/csv"),
    responses(
        (status = 202, description = "Stored; the job imports it. Follow it at /v1/jobs/{id}", body = Job),
        (status = 400, description = "Unknown kind or format, or an empty file", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Over the import size limit", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn start_import(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(params): Query<ImportParams>,
    body: Body,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    let import_id = Uuid::now_v7();
    let mut tx = state.pool.begin().await?;
    let mut stream = body.into_data_stream();
    let mut pending: Vec<u8> = Vec::new();
    let mut numbers: Vec<i64> = Vec::with_capacity(CHUNK_LINES);
    let mut lines: Vec<String> = Vec::with_capacity(CHUNK_LINES);
    let mut line_no: i64 = 0;
    let mut stored: i64 = 0;
    loop {
        let chunk = stream.next().await;
        let finished = chunk.is_none();
        match chunk {
            Some(Ok(bytes)) => pending.extend_from_slice(&bytes),
            Some(Err(e)) if is_length_limit(&e) => {
                return Err(ApiError::PayloadTooLarge(
                    "the file exceeds the import size limit".into(),
                ));
            }
            Some(Err(e)) => {
                return Err(ApiError::bad_request(
                    "body",
                    format!("upload interrupted: {e}"),
                ));
            }
            None => {}
        }
        // Complete lines go on; a trailing partial line waits for the next chunk.
        let mut start = 0;
        while let Some(offset) = pending[start..].iter().position(|b| *b == b'\n') {
            push_line(
                &pending[start..start + offset],
                &mut line_no,
                &mut numbers,
                &mut lines,
            );
            start += offset + 1;
        }
        pending.drain(..start);
        if finished && !pending.is_empty() {
            let rest = std::mem::take(&mut pending);
            push_line(&rest, &mut line_no, &mut numbers, &mut lines);
        }
        if lines.len() >= CHUNK_LINES || (finished && !lines.is_empty()) {
            stored += lines.len() as i64;
            store_lines(&mut tx, ctx.tenant_id, import_id, &numbers, &lines).await?;
            numbers.clear();
            lines.clear();
        }
        if finished {
            break;
        }
    }
    if stored == 0 {
        return Err(ApiError::bad_request("body", "the file has no lines"));
    }
    let payload = ImportPayload {
        import_id,
        kind: params.kind,
        format: params.format,
        lines: stored,
    };
    let job = queue::enqueue(
        &mut *tx,
        &NewJob::new(
            ctx.tenant_id,
            IMPORT,
            serde_json::to_value(&payload).map_err(ApiError::internal)?,
        ),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Keeps non-blank lines with their 1-based line number (what people see in an editor).
fn push_line(raw: &[u8], line_no: &mut i64, numbers: &mut Vec<i64>, lines: &mut Vec<String>) {
    *line_no += 1;
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches('\r');
    if !text.trim().is_empty() {
        numbers.push(*line_no);
        lines.push(text.to_owned());
    }
}

async fn store_lines(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    import_id: Uuid,
    numbers: &[i64],
    lines: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO profiling.import_lines (tenant_id, import_id, line_no, line)
           SELECT $1, $2, n, l FROM UNNEST($3::int8[], $4::text[]) AS t(n, l)"#,
        tenant_id,
        import_id,
        numbers,
        lines
    )
    .execute(conn)
    .await?;
    Ok(())
}

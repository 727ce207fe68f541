//! Proxy mode: `/v1/<area>/...` is forwarded to that service's upstream URL, bodies
//! streamed both ways (SSE included). The caller and request id travel on internal
//! headers guarded by the internal token; the client's own copies are dropped.

use std::time::Duration;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderName, Uri, header},
    response::{IntoResponse, Response},
};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use mercato_platform::{
    ApiError,
    auth::{Caller, write_internal_headers},
    http::PassThrough,
    settings::Settings,
};
use secrecy::SecretString;

use crate::state::GatewayState;

/// Upstream base URLs by area, with the client that reaches them.
#[derive(Clone)]
pub struct Upstreams {
    client: Client<HttpConnector, Body>,
    areas: Vec<(&'static str, Uri)>,
    token: SecretString,
    /// Shorter than the request timeout so a slow upstream is told apart (504) from a slow
    /// gateway (408).
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamConfigError {
    #[error("gateway.upstreams.{0} is not a valid URL: {1}")]
    BadUrl(&'static str, String),
    #[error("MERCATO_INTERNAL_TOKEN must be set (16+ characters) in proxy mode")]
    MissingToken,
}

impl Upstreams {
    pub fn from_settings(settings: &Settings) -> Result<Self, UpstreamConfigError> {
        let token = settings
            .secrets
            .internal_token
            .clone()
            .filter(|t| secrecy::ExposeSecret::expose_secret(t).len() >= 16)
            .ok_or(UpstreamConfigError::MissingToken)?;
        let u = &settings.gateway.upstreams;
        let mut areas = Vec::new();
        for (area, url) in [
            ("profiling", &u.profiling),
            ("content", &u.content),
            ("metrics", &u.metrics),
        ] {
            let uri: Uri = url
                .trim_end_matches('/')
                .parse()
                .map_err(|_| UpstreamConfigError::BadUrl(area, url.clone()))?;
            if uri.scheme().is_none() || uri.authority().is_none() {
                return Err(UpstreamConfigError::BadUrl(area, url.clone()));
            }
            if area == "content" {
                // The OpenAI-compatible route sits at /v1/chat/completions, outside /v1/content.
                areas.push(("chat", uri.clone()));
            }
            areas.push((area, uri));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let timeout = Duration::from_secs(settings.server.request_timeout_secs).mul_f64(0.9);
        Ok(Self {
            client,
            areas,
            token,
            timeout,
        })
    }

    pub fn areas(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.areas.iter().map(|(a, _)| *a)
    }

    fn base_for(&self, path: &str) -> Option<&Uri> {
        let area = path.strip_prefix("/v1/")?.split('/').next()?;
        self.areas
            .iter()
            .find(|(a, _)| *a == area)
            .map(|(_, uri)| uri)
    }
}

/// Hop-by-hop headers are for one connection only (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove("keep-alive");
}

/// Forwards the request to its area's upstream.
pub async fn forward(State(state): State<GatewayState>, req: Request) -> Response {
    match forward_inner(&state, req).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn forward_inner(state: &GatewayState, req: Request) -> Result<Response, ApiError> {
    let upstreams = state
        .upstreams
        .as_ref()
        .ok_or_else(|| ApiError::internal("proxy route without upstreams"))?;
    let caller = req
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| ApiError::Unauthorized("missing API key".into()))?;
    let (mut parts, body) = req.into_parts();
    let base = upstreams
        .base_for(parts.uri.path())
        .ok_or_else(|| ApiError::NotFound("route".into()))?;
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut uri = Uri::builder().path_and_query(path_and_query);
    if let (Some(scheme), Some(authority)) = (base.scheme(), base.authority()) {
        uri = uri.scheme(scheme.clone()).authority(authority.clone());
    }
    parts.uri = uri
        .build()
        .map_err(|_| ApiError::bad_request("path", "cannot be forwarded"))?;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::HOST);
    write_internal_headers(&mut parts.headers, &caller, &upstreams.token);
    let upstream_req = Request::from_parts(parts, body);

    let response = tokio::time::timeout(upstreams.timeout, upstreams.client.request(upstream_req))
        .await
        .map_err(|_| UpstreamFailure::Timeout)?
        .map_err(|e| {
            tracing::warn!(error = %e, "upstream request failed");
            UpstreamFailure::Unreachable
        })?;
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.extensions.insert(PassThrough);
    Ok(Response::from_parts(parts, Body::new(body)))
}

enum UpstreamFailure {
    Timeout,
    Unreachable,
}

impl From<UpstreamFailure> for ApiError {
    fn from(f: UpstreamFailure) -> Self {
        match f {
            UpstreamFailure::Timeout => ApiError::Upstream {
                timeout: true,
                detail: "the service did not answer in time".into(),
            },
            UpstreamFailure::Unreachable => ApiError::Upstream {
                timeout: false,
                detail: "the service could not be reached".into(),
            },
        }
    }
}

//! The service REST API: Azure IoT Hub's registry surface, plus `/openapi.json` and `/metrics`.
//!
//! Every route is declared once with `#[utoipa::path]`, and the router and the OpenAPI document
//! are built from the same declarations, so the document cannot drift from the handlers.

pub(crate) mod bulk;
pub(crate) mod c2d;
pub(crate) mod convert;
pub(crate) mod device_messages;
pub(crate) mod devices;
pub mod error;
pub(crate) mod events;
pub(crate) mod extract;
pub(crate) mod jobs;
pub(crate) mod methods;
pub(crate) mod modules;
pub(crate) mod query;
pub(crate) mod scheduled_jobs;
pub(crate) mod stats;
pub(crate) mod twins;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferrohub_api::JSON_CONTENT_TYPE;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::hub::Hub;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Ferrohub service API",
        description = "Azure IoT Hub's data-plane service API (api-version 2021-04-12) as served by Ferrohub. Every request carries `Authorization: SharedAccessSignature sr=…&sig=…&se=…&skn=…`, a token of a shared access policy; `?api-version=` is accepted with any value.",
    ),
    components(schemas(ferrohub_api::ErrorBody))
)]
struct ApiDoc;

/// The OpenAPI router with every service route and its document.
fn api_router() -> OpenApiRouter<Arc<Hub>> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            devices::get_device,
            devices::put_device,
            devices::delete_device
        ))
        .routes(routes!(devices::list_devices, devices::bulk_devices))
        .routes(routes!(
            modules::get_module,
            modules::put_module,
            modules::delete_module
        ))
        .routes(routes!(modules::list_modules))
        .routes(routes!(query::query_devices))
        .routes(routes!(stats::registry_statistics))
        .routes(routes!(stats::service_statistics))
        .routes(routes!(device_messages::send_event))
        .routes(routes!(c2d::send, c2d::device_receive))
        .routes(routes!(c2d::device_settle))
        .routes(routes!(c2d::device_abandon))
        .routes(routes!(c2d::purge))
        .routes(routes!(c2d::receive_feedback))
        .routes(routes!(c2d::complete_feedback))
        .routes(routes!(c2d::abandon_feedback))
        .routes(routes!(events::partitions))
        .routes(routes!(events::partition))
        .routes(routes!(events::read_events))
        .routes(routes!(events::stream_events))
        .routes(routes!(events::list_groups))
        .routes(routes!(events::create_group, events::delete_group))
        .routes(routes!(events::checkpoints))
        .routes(routes!(events::set_checkpoint))
        .routes(routes!(jobs::create_job))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::get_job, jobs::cancel_job))
        .routes(routes!(scheduled_jobs::create_job, scheduled_jobs::get_job))
        .routes(routes!(scheduled_jobs::cancel_job))
        .routes(routes!(scheduled_jobs::query_jobs))
        .routes(routes!(methods::invoke_device_method))
        .routes(routes!(methods::invoke_module_method))
        .routes(routes!(
            twins::get_twin,
            twins::patch_twin,
            twins::replace_twin
        ))
        .routes(routes!(
            twins::get_module_twin,
            twins::patch_module_twin,
            twins::replace_module_twin
        ))
}

/// The OpenAPI document of the service API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The complete HTTP application served on the HTTPS port.
pub fn router(hub: Arc<Hub>, metrics: Option<PrometheusHandle>, max_body: usize) -> Router {
    let (api, doc) = api_router().split_for_parts();
    let doc = Arc::new(doc);
    let mut app = api
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { json(StatusCode::OK, doc.as_ref(), None) }
            }),
        )
        .route("/healthz", get(healthz))
        .route("/$iothub/websocket", get(iothub_websocket))
        .route("/$servicebus/websocket", get(servicebus_websocket))
        // Node's HTTP transport writes `devicebound`, C#'s `deviceBound`.
        .route(
            "/devices/{id}/messages/devicebound",
            get(c2d::device_receive),
        )
        .route(
            "/devices/{id}/messages/devicebound/{etag}",
            axum::routing::delete(c2d::device_settle),
        )
        .route(
            "/devices/{id}/messages/devicebound/{etag}/abandon",
            axum::routing::post(c2d::device_abandon),
        );
    if let Some(handle) = metrics {
        app = app.route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        );
    }
    // Every answer is in Azure's error shape, unknown paths and wrong methods included.
    app.fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(record_metrics))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::Extension(extract::BodyLimit(max_body)))
        .with_state(hub)
}

/// The peer's address, as the HTTPS listener recorded it.
fn peer_of(
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
) -> std::net::SocketAddr {
    peer.map_or_else(
        || std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        |axum::Extension(axum::extract::ConnectInfo(p))| p,
    )
}

/// The AMQP over WebSockets subprotocol (amqp-contract §1.4).
const AMQP_WS_PROTOCOL: &str = "AMQPWSB10";

/// `/$iothub/websocket`: MQTT (subprotocol `mqtt`) or AMQP (`AMQPWSB10`) over WebSockets, as
/// the client asks; any query string is ignored.
async fn iothub_websocket(
    State(hub): State<Arc<Hub>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let peer = peer_of(peer);
    let ws = ws.protocols(["mqtt", AMQP_WS_PROTOCOL]);
    let amqp = ws.selected_protocol().is_some_and(|p| {
        p.as_bytes()
            .eq_ignore_ascii_case(AMQP_WS_PROTOCOL.as_bytes())
    });
    if amqp {
        return amqp_upgrade(hub, peer, ws);
    }
    ws.max_message_size(ferrohub_mqtt::session::DEFAULT_MAX_PACKET_SIZE + 1024)
        .on_upgrade(move |socket| {
            crate::mqtt::drive(hub, crate::transport::WsTransport(socket), peer)
        })
}

/// `/$servicebus/websocket`: AMQP over WebSockets, as the Event Hubs SDKs and uamqp dial it.
async fn servicebus_websocket(
    State(hub): State<Arc<Hub>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let peer = peer_of(peer);
    amqp_upgrade(hub, peer, ws.protocols([AMQP_WS_PROTOCOL]))
}

fn amqp_upgrade(
    hub: Arc<Hub>,
    peer: std::net::SocketAddr,
    ws: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    ws.max_message_size(2 << 20).on_upgrade(move |socket| {
        crate::amqp::drive(hub, crate::transport::WsTransport(socket), peer)
    })
}

/// Liveness and readiness: 200 `ok` while the hub can make telemetry durable, else 503 with
/// the reason.
async fn healthz(State(hub): State<Arc<Hub>>) -> Response {
    match hub.health() {
        Ok(()) => "ok".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn not_found() -> Response {
    error::ApiError::new(
        ferrohub_types::ErrorCode::GenericNotFound,
        "The requested resource does not exist.",
    )
    .into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error::method_not_allowed(&method, uri.path())
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let start = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!("ferrohub_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ferrohub_http_request_duration_seconds", "route" => route, "method" => method)
        .record(start.elapsed().as_secs_f64());
    resp
}

/// A JSON response with Azure's exact content type and, when given, a quoted `ETag` header.
pub(crate) fn json<T: Serialize + ?Sized>(
    status: StatusCode,
    value: &T,
    etag: Option<&str>,
) -> Response {
    let body = match serde_json::to_vec(value) {
        Ok(b) => b,
        Err(e) => {
            return error::ApiError::new(
                ferrohub_types::ErrorCode::ServerError,
                format!("serializing the response failed: {e}"),
            )
            .into_response();
        }
    };
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    if let Some(tag) = etag
        && let Ok(v) = HeaderValue::from_str(&format!("\"{tag}\""))
    {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// The state handlers receive.
pub(crate) type HubState = State<Arc<Hub>>;

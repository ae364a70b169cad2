//! The console's execution pages: `/console/executions/R-5/timeline`, the postmortem timeline
//! as HTML (the same content as `/ops timeline R-5`'s Markdown file, every text escaped), and
//! `/console/executions/R-5/steps/N/output`, step N's output as plain text — where the
//! timeline's output links point.

use super::ConsoleState;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use runbot_commands::grammar::ExecutionId;

fn execution(id: &str) -> Result<ExecutionId, (StatusCode, String)> {
    id.parse().map_err(|e: String| (StatusCode::NOT_FOUND, e))
}

/// `GET /console/executions/{id}/timeline`.
pub(super) async fn timeline_page(State(state): State<ConsoleState>, Path(id): Path<String>) -> Response {
    let id = match execution(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match state.engine.timeline_of(id).await {
        Ok(t) => ([(header::CACHE_CONTROL, "no-store")], Html(t.html())).into_response(),
        Err(reply) => (StatusCode::NOT_FOUND, reply.message.text).into_response(),
    }
}

/// `GET /console/executions/{id}/steps/{n}/output` (n from 1).
pub(super) async fn step_output(State(state): State<ConsoleState>, Path((id, n)): Path<(String, usize)>) -> Response {
    let id = match execution(&id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    let store = state.engine.store();
    let steps = match store.load(id).await {
        Ok(Some(v)) => v.value.steps.len(),
        Ok(None) => return (StatusCode::NOT_FOUND, format!("There is no execution {id}.")).into_response(),
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}")).into_response(),
    };
    if n == 0 || n > steps {
        return (StatusCode::NOT_FOUND, format!("{id} has no step {n} (it has {steps})")).into_response();
    }
    match store.output(id, n - 1).await {
        Ok(text) => {
            let text = state.engine.settings().redactor.redact(&text);
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8"), (header::CACHE_CONTROL, "no-store")], text).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("the store: {e}")).into_response(),
    }
}

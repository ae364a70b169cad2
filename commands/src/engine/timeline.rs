//! `/ops timeline R-5`: the execution's postmortem timeline (`crate::timeline`) from the audit
//! trail, answered privately as Markdown.

use super::{Engine, Reply, UpdateError};
use crate::grammar::ExecutionId;
use crate::message::Message;

impl Engine {
    pub(super) async fn timeline(&self, id: ExecutionId) -> Reply {
        let exec = match self.store().load(id).await {
            Ok(Some(v)) => v.value,
            Ok(None) => return Reply::private(format!("There is no execution {id}.")),
            Err(e) => return UpdateError::Store(e).reply(),
        };
        let records = match self.store().audit_log().await {
            Ok((records, _)) => records,
            Err(e) => return UpdateError::Store(e).reply(),
        };
        let md = crate::timeline::build(&exec, &records).markdown();
        let settings = self.settings();
        let msg =
            Message { code: Some(md), ..Message::text(format!("Timeline of {id} (times UTC); also: runbot audit timeline {id} --format md|json")) }
                .with_title(format!("Timeline of {id}"))
                .map_text(|t| settings.redactor.redact(t));
        Reply { message: msg, ephemeral: true }
    }
}

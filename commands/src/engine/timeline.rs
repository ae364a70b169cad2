//! `/ops timeline R-5`: the execution's postmortem timeline (`crate::timeline`) from the audit
//! trail — times in UTC and in the environment's `time_zone`, each step linked to its output
//! in the console — uploaded as a Markdown file into the execution's thread, with a short
//! private reply. Where no file can be uploaded, the reply carries the Markdown itself.

use super::{Engine, Reply, UpdateError};
use crate::grammar::ExecutionId;
use crate::message::Message;
use crate::ports::Upload;
use crate::timeline::Timeline;

impl Engine {
    /// The timeline of execution `id` as this runbot shows it (zone and links from the
    /// configuration), redacted; `Err` is the answer to give instead.
    pub async fn timeline_of(&self, id: ExecutionId) -> Result<Timeline, Reply> {
        let exec = match self.store().load(id).await {
            Ok(Some(v)) => v.value,
            Ok(None) => return Err(Reply::private(format!("There is no execution {id}."))),
            Err(e) => return Err(UpdateError::Store(e).reply()),
        };
        let records = match self.store().audit_log().await {
            Ok((records, _)) => records,
            Err(e) => return Err(UpdateError::Store(e).reply()),
        };
        Ok(crate::timeline::build(&exec, &records).as_configured(&exec, &self.settings()))
    }

    pub(super) async fn timeline(&self, id: ExecutionId) -> Reply {
        let t = match self.timeline_of(id).await {
            Ok(t) => t,
            Err(reply) => return reply,
        };
        let md = t.markdown();
        let file = Upload { filename: format!("timeline-{id}.md"), title: format!("Timeline of {id}"), content: md.clone().into_bytes() };
        let exec = match self.store().load(id).await {
            Ok(Some(v)) => v.value,
            _ => return Reply::private(format!("There is no execution {id}.")),
        };
        let mut why = format!("{id} has no status message to thread it under");
        for m in &exec.messages {
            let Some(chat) = self.chats().get(&m.platform) else { continue };
            let comment = format!("Postmortem timeline of {id} ({} events).", t.events.len());
            match chat.upload(&m.channel, Some(&m.id), &file, &comment).await {
                Ok(_) => {
                    let text =
                        format!("Posted the timeline of {id} in its thread as {}; also: runbot audit timeline {id} --format md|json", file.filename);
                    return Reply::private(text);
                }
                Err(e) => {
                    tracing::warn!(error = %e, execution = %id, platform = %m.platform, "could not upload the timeline");
                    why = format!("the {} upload failed: {e}", m.platform);
                }
            }
        }
        let msg = Message {
            code: Some(md),
            ..Message::text(format!("Timeline of {id} (not posted as a file: {why}); also: runbot audit timeline {id} --format md|json"))
        }
        .with_title(format!("Timeline of {id}"));
        Reply { message: msg, ephemeral: true }
    }
}

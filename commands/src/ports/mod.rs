//! The narrow traits the engine needs from the outside world. Adapters implement them; the
//! engine never sees a wire format or an SDK type.

pub mod backup;
pub mod chat;
pub mod clock;
pub mod cluster;
pub mod deploy;
pub mod integrity;
pub mod store;

pub use backup::{BackupCatalog, CatalogError, CatalogSnapshot, Catalogs};
pub use chat::{Chat, ChatError, Chats, Upload};
pub use clock::{Clock, SystemClock, TokioClock};
pub use cluster::{Cluster, ClusterError, Clusters, PodInfo, Rollout};
pub use deploy::{Ci, CiError, HelmRevision, HttpAnswer, HttpCheck, HttpCheckError, Registry, RegistryError, RunQuery, WorkflowRun};
pub use store::{Fence, Inbound, InboxClaim, ListFilter, PostedAlert, Store, StoreError, Versioned};

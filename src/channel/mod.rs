//! A channel as the publisher knows it: read, verified and cross-checked
//! against its history (`state`), what is wrong with it (`problem`), the
//! head this machine remembers (`anchor`), how a write is planned (`plan`)
//! and why one is refused (`refusal`), and what devices need from the
//! server (`device`).

pub mod anchor;
pub mod device;
pub mod plan;
pub mod problem;
pub mod refusal;
pub mod source;
pub mod state;

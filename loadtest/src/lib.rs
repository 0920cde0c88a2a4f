//! The pieces of `pubsocketd-loadtest` and `floor` that are worth testing
//! on their own: payload stamps, the client's frame parser, `/proc`
//! readings, the plot and the comparison summary.

pub mod client;
pub mod conn;
pub mod payload;
pub mod procfs;
pub mod publisher;
pub mod shared;
pub mod summary;
pub mod svg;
pub mod wsframe;

//! The ServerTable actor: owns the trusted servers and answers "which way?" for a
//! [`RouteTarget`] with the pure [`routing::decide`]. Keeping the table in one actor gives a
//! single place to change it at runtime later (e.g. a reload), without touching the Routers.

use super::messages::ResolveNextHop;
use crate::routing::{self, ServerTable};
use actix::prelude::*;

pub struct ServerTableActor {
    table: ServerTable,
}

impl ServerTableActor {
    pub fn new(table: ServerTable) -> Self {
        ServerTableActor { table }
    }
}

impl Actor for ServerTableActor {
    type Context = Context<Self>;
}

impl Handler<ResolveNextHop> for ServerTableActor {
    type Result = MessageResult<ResolveNextHop>;

    fn handle(&mut self, m: ResolveNextHop, _: &mut Context<Self>) -> Self::Result {
        MessageResult(routing::decide(&self.table, &m.0))
    }
}

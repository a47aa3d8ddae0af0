//! The boards of `firmware/boards.rs` (the project's one table of boards, which the firmware
//! build scripts and the xtask read too): here for planning a blob's arena into a board's memory
//! regions (`vitae quantize --board`) and naming them in `vitae inspect --board`.

include!("../../../firmware/boards.rs");

/// The board called `name`, or an error listing the boards.
pub fn board(name: &str) -> Result<&'static Board, UnknownBoard> {
    Board::named(name).ok_or_else(|| UnknownBoard(name.to_string()))
}

/// A board name that is not in the table.
#[derive(Debug, thiserror::Error)]
#[error("unknown board `{0}`; known boards: {known}", known = board_names().join(", "))]
pub struct UnknownBoard(pub String);

/// Every board's name.
pub fn board_names() -> Vec<&'static str> {
    BOARDS.iter().map(|b| b.name).collect()
}

impl Board {
    /// The regions the arena may use, fastest first, each with the room the arena has in it:
    /// what the planner fills.
    pub fn arena_regions(&self) -> Vec<crate::quantize::plan::Region> {
        (0..self.arena.len())
            .map(|i| crate::quantize::plan::Region {
                name: self.arena[i].to_string(),
                room: self.arena_room(i) as usize,
            })
            .collect()
    }
}

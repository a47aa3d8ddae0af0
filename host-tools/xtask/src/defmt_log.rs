//! Decoding the firmware's defmt log on the host.

use anyhow::{Context, Result};
use defmt_decoder::{DecodeError, StreamDecoder, Table};

/// Turns the raw defmt byte stream of one firmware run into text lines.
pub struct LogDecoder<'t> {
    decoder: Box<dyn StreamDecoder + Send + Sync + 't>,
    malformed: usize,
}

/// Reads the defmt symbol table from a firmware ELF.
pub fn table(elf: &[u8]) -> Result<Table> {
    Table::parse(elf)
        .context("reading the defmt table from the firmware ELF")?
        .context("the firmware ELF has no defmt table (is it linked with -Tdefmt.x?)")
}

impl<'t> LogDecoder<'t> {
    pub fn new(table: &'t Table) -> Self {
        LogDecoder {
            decoder: table.new_stream_decoder(),
            malformed: 0,
        }
    }

    /// Feeds bytes; calls `on_line` for every complete log frame, as text. Error and warning
    /// frames are prefixed with their level; `println!` frames are plain.
    pub fn feed(&mut self, bytes: &[u8], on_line: &mut dyn FnMut(String)) {
        self.decoder.received(bytes);
        loop {
            match self.decoder.decode() {
                Ok(frame) => {
                    let msg = frame.display_message().to_string();
                    let line = match frame.level() {
                        Some(level) => format!("{} {msg}", level.as_str().to_uppercase()),
                        None => msg,
                    };
                    on_line(line);
                }
                Err(DecodeError::UnexpectedEof) => break,
                Err(DecodeError::Malformed) => {
                    self.malformed += 1;
                    if self.malformed > 1000 {
                        break;
                    }
                }
            }
        }
    }

    /// Frames that could not be decoded (a firmware that does not match its ELF, or a crash
    /// mid-frame).
    pub fn malformed_frames(&self) -> usize {
        self.malformed
    }
}

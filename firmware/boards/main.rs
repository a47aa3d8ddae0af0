//! Links the ViTAE-Edge application for this package's board (see `vitae-app`).
#![no_std]
#![no_main]

use vitae_app as _;

//! The directory store as one more hosting: the channel directory lives in
//! the document root of a real nginx (tests/e2e/nginx.sh), which devices
//! fetch it from, through the arch symlinks. The shared scenarios minus the
//! server vanishing mid-upload: a local directory has no connection to cut.

mod common;
mod hosting;

use hosting::{Nginx, Site};

hosting_scenarios! {
    mod dir;
    let nginx = Nginx::start();
    site: Site::dir(&nginx);
}

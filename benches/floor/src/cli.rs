//! The command line both floors take: `LISTEN_PORT PG_SOCKET_PATH DATABASE POOL_SIZE`.

pub struct Args {
    pub port: u16,
    pub socket: String,
    pub database: String,
    pub size: usize,
}

/// The arguments, or the usage (named `name`) and exit status 2.
pub fn args(name: &str) -> Args {
    let args: Vec<String> = std::env::args().collect();
    let [_, port, socket, database, size] = &args[..] else {
        eprintln!("usage: {name} LISTEN_PORT PG_SOCKET_PATH DATABASE POOL_SIZE");
        std::process::exit(2);
    };
    Args {
        port: port.parse().expect("port"),
        socket: socket.clone(),
        database: database.clone(),
        size: size.parse().expect("pool size"),
    }
}

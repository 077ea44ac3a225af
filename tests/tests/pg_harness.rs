//! The private PostgreSQL harness itself: start, query, stop, start again.

use gatehouse_tests::postgres::Postgres;

#[test]
fn starts_stops_and_restarts_on_the_same_port() {
    let mut pg = Postgres::start();
    assert!(
        pg.database_url()
            .starts_with("postgres://postgres@127.0.0.1:")
    );
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (41), (1)");
    assert_eq!(pg.psql("SELECT sum(x) FROM t"), "42");
    let port = pg.port();
    pg.stop();
    assert!(!pg.is_running());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped server still listening"
    );
    pg.start_again();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql("SELECT sum(x) FROM t"),
        "42",
        "data survives a restart"
    );
}

//! The test server itself: it starts, gives each test its own database,
//! and leaves nothing behind.

use ci_slo_store_pg::testing::TestServer;

#[test]
fn the_shared_server_gives_each_test_a_database_of_its_own() {
    let server = TestServer::shared();
    eprintln!(
        "test PostgreSQL: started in {:.0} ms (initdb, server, first connection) on port {}",
        server.startup().as_secs_f64() * 1000.0,
        server.port()
    );
    let a = server.database("a").unwrap();
    let b = server.database("b").unwrap();
    assert_ne!(a.name(), b.name());
    a.connect()
        .unwrap()
        .batch_execute("CREATE TABLE only_in_a (x INT); INSERT INTO only_in_a VALUES (1)")
        .unwrap();
    let in_b: bool = b
        .connect()
        .unwrap()
        .query_one("SELECT to_regclass('only_in_a') IS NOT NULL", &[])
        .unwrap()
        .get(0);
    assert!(!in_b);
    // TCP connections need the password.
    let mut wrong = a.config();
    wrong.password("not-the-password");
    let err = ci_slo_store_pg::describe(&wrong.connect(postgres::NoTls).err().expect("refused"));
    assert!(err.contains("password"), "{err}");
    // A dropped database is gone.
    let name = a.name().to_string();
    drop(a);
    let left: i64 = b
        .connect()
        .unwrap()
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[test]
fn a_server_of_its_own_stops_and_removes_its_directory_when_dropped() {
    let server = TestServer::start().unwrap();
    let (dir, port) = (server.dir().to_path_buf(), server.port());
    assert!(dir.join("data").join("PG_VERSION").exists());
    let db = server.database("own").unwrap();
    db.connect().unwrap().batch_execute("SELECT 1").unwrap();
    drop(db);
    drop(server);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still listening on {port}"
    );
}

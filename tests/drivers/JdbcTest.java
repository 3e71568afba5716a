// pgjdbc through pgmux: server-prepared statements from the first execution (prepareThreshold=1;
// pgjdbc names them S_1, S_2, ... per connection, so the same names carry different SQL on odd
// and even clients), a batch, several connections on threads at once.
//
// Run with the source launcher: java -cp /usr/share/java/postgresql.jar JdbcTest.java
// Connects with PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE; writes to the empty table
// drv(client int, seq int, v text). DRIVER_CLIENTS and DRIVER_ROUNDS size the run. Exits
// non-zero naming the first mismatch or error.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.Objects;
import java.util.Properties;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

public class JdbcTest {
    static class Mismatch extends Exception {
        Mismatch(String message) {
            super(message);
        }
    }

    static void check(String what, Object got, Object want) throws Mismatch {
        if (!Objects.equals(got, want)) {
            throw new Mismatch(what + ": got " + got + ", want " + want);
        }
    }

    interface Body {
        void run() throws SQLException;
    }

    static void expectError(String what, String sqlstate, Body body) throws Mismatch {
        try {
            body.run();
        } catch (SQLException e) {
            if (!sqlstate.equals(e.getSQLState())) {
                throw new Mismatch(what + ": want SQLSTATE " + sqlstate + ", got " + e.getSQLState() + ": " + e.getMessage());
            }
            return;
        }
        throw new Mismatch(what + ": want SQLSTATE " + sqlstate + ", got success");
    }

    static String env(String name) {
        String v = System.getenv(name);
        if (v == null) {
            throw new IllegalStateException("JdbcTest: " + name + " is not set");
        }
        return v;
    }

    static Object one(PreparedStatement st) throws SQLException, Mismatch {
        try (ResultSet rs = st.executeQuery()) {
            if (!rs.next()) {
                throw new Mismatch("no row from " + st);
            }
            return rs.getObject(1);
        }
    }

    static String count(PreparedStatement st) throws SQLException, Mismatch {
        try (ResultSet rs = st.executeQuery()) {
            if (!rs.next()) {
                throw new Mismatch("no row from " + st);
            }
            return rs.getInt(1) + "/" + rs.getInt(2);
        }
    }

    static void client(int i, String url, Properties props, int rounds) throws Exception {
        try (Connection c = DriverManager.getConnection(url, props)) {
            c.setAutoCommit(true);
            boolean even = i % 2 == 0;
            // Prepared (and so server-named) first on each connection: S_1 everywhere.
            PreparedStatement calc = c.prepareStatement(even ? "SELECT ?::int * 1000 + " + i : "SELECT ?::text || ':" + i + "'");
            PreparedStatement insert = c.prepareStatement("INSERT INTO drv (client, seq, v) VALUES (?, ?, ?)");
            PreparedStatement count = c.prepareStatement("SELECT count(*)::int, coalesce(sum(seq), 0)::int FROM drv WHERE client = ?");
            PreparedStatement divide = c.prepareStatement("SELECT 10 / ?::int");
            count.setInt(1, i);

            for (int r = 0; r < rounds; r++) {
                String tag = "client " + i + " round " + r;
                final int round = r;
                Body setCalc = () -> {
                    if (even) {
                        calc.setInt(1, round);
                    } else {
                        calc.setString(1, Integer.toString(round));
                    }
                };
                Object calcWant = even ? (Object) (r * 1000 + i) : (Object) (r + ":" + i);
                setCalc.run();
                check(tag + ": calc", one(calc), calcWant);
                insert.setInt(1, i);
                insert.setInt(2, r);
                insert.setString(3, "c" + i + "r" + r);
                check(tag + ": insert", insert.executeUpdate(), 1);
                String want = (r + 1) + "/" + (r * (r + 1) / 2);
                check(tag + ": count", count(count), want);
                divide.setInt(1, 5);
                check(tag + ": divide", one(divide), 2);

                if (r % 4 == 1) {
                    c.setAutoCommit(false);
                    for (int k = 1; k <= 2; k++) {
                        insert.setInt(1, i);
                        insert.setInt(2, 1000 * k + r);
                        insert.setString(3, "rolled back");
                        insert.addBatch();
                    }
                    int[] done = insert.executeBatch();
                    check(tag + ": batch", done.length, 2);
                    check(tag + ": count inside the transaction", count(count), (r + 3) + "/" + (r * (r + 1) / 2 + 3000 + 2 * r));
                    c.rollback();
                    c.setAutoCommit(true);
                    check(tag + ": count after rollback", count(count), want);
                }

                if (r % 4 == 3) {
                    c.setAutoCommit(false);
                    insert.setInt(1, i);
                    insert.setInt(2, 2000 + r);
                    insert.setString(3, "lost");
                    insert.executeUpdate();
                    divide.setInt(1, 0);
                    expectError(tag + ": 10 / 0", "22012", () -> divide.executeQuery().close());
                    expectError(tag + ": after the error", "25P02", () -> calc.executeQuery().close());
                    c.rollback();
                    c.setAutoCommit(true);
                    check(tag + ": calc after the failed transaction", one(calc), calcWant);
                    check(tag + ": count after the failed transaction", count(count), want);
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        int clients = Integer.parseInt(System.getenv().getOrDefault("DRIVER_CLIENTS", "20"));
        int rounds = Integer.parseInt(System.getenv().getOrDefault("DRIVER_ROUNDS", "20"));
        String url = "jdbc:postgresql://" + env("PGHOST") + ":" + env("PGPORT") + "/" + env("PGDATABASE");
        Properties props = new Properties();
        props.setProperty("user", env("PGUSER"));
        props.setProperty("password", env("PGPASSWORD"));
        props.setProperty("prepareThreshold", "1");
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "10");
        props.setProperty("socketTimeout", "30");

        long t0 = System.nanoTime();
        ExecutorService pool = Executors.newFixedThreadPool(clients);
        List<Future<?>> futures = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            final int client = i;
            futures.add(pool.submit(() -> {
                client(client, url, props, rounds);
                return null;
            }));
        }
        pool.shutdown();
        List<String> failures = new ArrayList<>();
        for (int i = 0; i < clients; i++) {
            try {
                futures.get(i).get(60, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException e) {
                Throwable cause = e.getCause();
                String message = Objects.toString(cause.getMessage(), "").lines().findFirst().orElse("");
                failures.add("client " + i + ": " + cause.getClass().getSimpleName() + ": " + message);
            } catch (java.util.concurrent.TimeoutException e) {
                failures.add("client " + i + ": not done after 60 s");
            }
        }
        double elapsed = (System.nanoTime() - t0) / 1e9;
        if (!failures.isEmpty()) {
            System.err.println("JdbcTest: " + failures.size() + " of " + clients + " clients failed:");
            for (String f : failures) {
                System.err.println("  " + f);
            }
            // Exits even with a client thread still stuck.
            System.exit(1);
        }
        String version = DriverManager.getDriver(url).getMajorVersion() + "." + DriverManager.getDriver(url).getMinorVersion();
        System.out.printf("JdbcTest: pgjdbc %s, %d clients x %d rounds ok in %.1f s%n", version, clients, rounds, elapsed);
        System.exit(0);
    }
}

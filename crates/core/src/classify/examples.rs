//! Test data: for every default rule a realistic snippet it must classify and a
//! near miss it must not. Lines are shaped after the real output of each tool
//! (several come from the logs in tests/fixtures/failing-logs). In a snippet of
//! several lines the evidence line starts with `>>`.

/// (rule, snippet it must classify as that rule, near miss that must not be)
pub(crate) const RULE_EXAMPLES: &[(&str, &str, &str)] = &[
    // ---- stopped from outside
    (
        "job-timeout",
        "##[error]The job running on runner GitHub Actions 3 has exceeded the maximum execution time of 60 minutes.",
        "Job timeout is set to 60 minutes",
    ),
    (
        "job-timeout",
        "No output has been received in the last 10m0s, this potentially indicates a stalled build or something wrong with the build itself.",
        "No output was expected from the linter",
    ),
    (
        "runner-lost",
        "##[error]The runner has received a shutdown signal. This can happen when the runner service is stopped, or a manually started runner is canceled.",
        "Runner registered with the server successfully",
    ),
    (
        "cancelled",
        "##[error]The operation was canceled.",
        "Cancelling stale workflow runs: none found, the job was not cancelled",
    ),
    (
        "killed",
        "/bin/bash: line 142:  8123 Killed                  cargo test --workspace",
        "Killed 3 stale docker containers before starting",
    ),
    // ---- resources, network, crashes
    (
        "oom",
        "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
        "Memory usage: 1.2 GiB of 7 GiB, out-of-memory guard disabled",
    ),
    (
        "disk-full",
        "write /var/lib/docker/tmp/GetImageBlob123: no space left on device",
        "Free space left on device /dev/sda1: 20G",
    ),
    (
        "rate-limited",
        "Error response from daemon: toomanyrequests: You have reached your pull rate limit.",
        "Rate limit remaining: 4999 of 5000",
    ),
    (
        "docker-pull-failed",
        "ERROR: Job failed: failed to pull image \"registry.example.com/ci/builder:42\" with specified policies [always]: Error response from daemon: manifest for registry.example.com/ci/builder:42 not found: manifest unknown",
        "Pulling docker image rust:1.80 ... done",
    ),
    (
        "dns-resolution",
        "fatal: unable to access 'https://github.com/org/repo.git/': Could not resolve host: github.com",
        "Resolved host github.com to 140.82.112.3",
    ),
    (
        "tls-handshake-timeout",
        "go: github.com/org/lib@v1.2.3: Get \"https://proxy.golang.org/github.com/org/lib/@v/v1.2.3.zip\": net/http: TLS handshake timeout",
        "TLS handshake completed in 120ms",
    ),
    (
        "tls-certificate",
        "ERROR: no certificate subject alternative name matches requested host name 'models.example.org'.",
        "certificate fetched and verified for models.example.org",
    ),
    (
        "connection-refused",
        "psycopg2.OperationalError: connection to server at \"localhost\" (127.0.0.1), port 5432 failed: Connection refused",
        "Connection accepted from 10.0.0.5",
    ),
    (
        "connection-reset",
        "error: RPC failed; curl 56 OpenSSL SSL_read: Connection reset by peer, errno 104",
        "Resetting connection pool after config change",
    ),
    (
        "segfault",
        "/tmp/run.sh: line 3:  4242 Segmentation fault      (core dumped) ./target/debug/app",
        "\tSIGSEGV:       altstack",
    ),
    // ---- dependencies
    (
        "dependency-pip",
        "ERROR: No matching distribution found for torch==9.9.9",
        "Successfully installed requests-2.31.0 urllib3-2.2.1",
    ),
    (
        "dependency-npm",
        "npm ERR! code ERESOLVE",
        "added 1201 packages, and audited 1202 packages in 12s",
    ),
    (
        "dependency-cargo",
        "error: failed to select a version for `tokio`.",
        "    Updating crates.io index",
    ),
    (
        "dependency-jvm",
        "[ERROR] Failed to execute goal on project app: Could not resolve dependencies for project com.example:app:jar:1.0: Could not find artifact com.example:lib:jar:9.9 in central",
        "[INFO] Downloaded from central: https://repo.maven.apache.org/maven2/org/example/lib/1.0/lib-1.0.jar (12 kB at 340 kB/s)",
    ),
    (
        "dependency-julia",
        "ERROR: Unsatisfiable requirements detected for package CSV [336ed68f]:",
        "   Resolving package versions...",
    ),
    (
        "dependency-ruby",
        "Bundler could not find compatible versions for gem \"rack\":",
        "Bundle complete! 42 Gemfile dependencies, 97 gems now installed.",
    ),
    (
        "dependency-php",
        "Your requirements could not be resolved to an installable set of packages.",
        "Package operations: 12 installs, 0 updates, 0 removals",
    ),
    (
        "dependency-go",
        "main.go:5:2: missing go.sum entry for module providing package github.com/org/lib (imported by example.com/app); to add:",
        "go: downloading github.com/org/lib v1.2.3",
    ),
    (
        "dependency-haskell",
        "cabal: Could not resolve dependencies:",
        "Resolving dependencies...",
    ),
    (
        "dependency-cocoapods",
        "[!] Unable to find a specification for `Alamofire (~> 9.0)`",
        "Installing Alamofire (5.8.1)",
    ),
    (
        "dependency-missing-module",
        "ModuleNotFoundError: No module named 'yaml'",
        "import yaml  # a module named yaml is used here",
    ),
    (
        "dependency-system",
        "/tmp/emacs/bin/emacs: error while loading shared libraries: libgnutls.so.26: cannot open shared object file: No such file or directory",
        "Setting up libgnutls30:amd64 (3.7.3-4ubuntu1) ...",
    ),
    // ---- build errors
    (
        "rust-compile-error",
        "error[E0425]: cannot find value `cfg` in this scope",
        "warning: unused variable: `cfg`",
    ),
    (
        "c-compile-error",
        "src/parser.c:88:13: error: use of undeclared identifier 'tok'",
        "src/parser.c:88:13: warning: unused variable 'tok' [-Wunused-variable]",
    ),
    (
        "linker-error",
        "/usr/bin/ld: main.o: in function `main': main.c:(.text+0x1a): undefined reference to `parse'",
        "gcc -o app main.o parse.o -lm",
    ),
    (
        "javac-error",
        "[ERROR] /home/runner/work/app/src/main/java/com/example/App.java:[17,9] cannot find symbol",
        "[INFO] Compiling 12 source files to /home/runner/work/app/target/classes",
    ),
    (
        "tsc-error",
        "src/index.ts(12,5): error TS2322: Type 'string' is not assignable to type 'number'.",
        "Found 0 errors. Watching for file changes.",
    ),
    (
        "dotnet-compile-error",
        "/home/runner/work/app/src/Program.cs(12,5): error CS1002: ; expected [/home/runner/work/app/src/App.csproj]",
        "    0 Error(s)",
    ),
    (
        "compile-error",
        "src/Text/Parser.hs:94:10: error:",
        "[ 16 of 147] Compiling Text.Parser ( src/Text/Parser.hs, dist/build/Text/Parser.o )",
    ),
    (
        "compile-error",
        "[error] /home/travis/build/org/app/src/main/scala/app/Main.scala:10:8: object Foo is not a member of package app",
        "[info] Compiling 43 Scala sources to /home/travis/build/org/app/target/classes ...",
    ),
    (
        "syntax-error",
        "SyntaxError: Unexpected token )",
        "Checking syntax of 42 files",
    ),
    (
        "cmake-error",
        "CMake Error at cmake/Dependencies.cmake:209 (find_package):",
        "-- Could NOT find Doxygen (missing: DOXYGEN_EXECUTABLE)",
    ),
    (
        "configure-error",
        "configure: error: C compiler cannot create executables",
        "checking whether the C compiler works... yes",
    ),
    (
        "latex-error",
        "! LaTeX Error: File `minted.sty' not found.",
        "(/usr/share/texlive/texmf-dist/tex/latex/base/article.cls",
    ),
    (
        "elixir-error",
        "** (CompileError) lib/app/worker.ex:12: undefined function frobnicate/1",
        "Compiling 12 files (.ex)",
    ),
    (
        "php-fatal",
        "PHP Fatal error:  Uncaught Error: Call to undefined function foo() in /app/src/x.php:3",
        "PHP 8.2.7 (cli) (built: Jun  9 2023 07:39:15) (NTS)",
    ),
    (
        "cocoapods-error",
        "    - ERROR | [iOS] xcodebuild: Returned an unsuccessful exit code.",
        "    - NOTE  | [iOS] xcodebuild: note: Using codesigning identity override",
    ),
    // ---- tests
    (
        "assertion-failed",
        "E       AssertionError: assert 3 == 4",
        "tests/test_math.py::test_assert_helpers PASSED",
    ),
    (
        "assertion-failed",
        "Failed asserting that two strings are equal.",
        "Asserting that two strings are equal is what this test does",
    ),
    (
        "surefire-test-failed",
        "[ERROR] Tests run: 3, Failures: 1, Errors: 0, Skipped: 0, Time elapsed: 0.05 s <<< FAILURE! - in com.example.AppTest",
        "[INFO] Tests run: 3, Failures: 0, Errors: 0, Skipped: 0, Time elapsed: 0.05 s - in com.example.AppTest",
    ),
    (
        "gradle-test-failed",
        "com.example.ParserTest > parsesEmptyInput FAILED",
        "com.example.ParserTest > parsesEmptyInput PASSED",
    ),
    (
        "ant-junit-failed",
        "    [junit] Test com.example.ParserTest FAILED",
        "    [junit] Running com.example.ParserTest",
    ),
    (
        "scalatest-failed",
        "[info] - should parse an empty input *** FAILED ***",
        "[info] - should parse an empty input",
    ),
    (
        "jest-test-failed",
        "  ● Parser › parses an empty input",
        "  ● Console",
    ),
    (
        "jest-suite-failed",
        "FAIL src/parser.test.js (5.2 s)",
        "PASS src/parser.test.js (5.2 s)",
    ),
    (
        "mocha-failing",
        "  2109 passing (1m)\n  1 failing\n\n>>  1) Parser\n       parses an empty input:\n     AssertionError: expected 1 to equal 2",
        "  2109 passing (1m)\n  0 failing",
    ),
    (
        "karma-test-failed",
        "Chrome Headless 120.0.6099.109 (Linux x86_64) Parser parses an empty input FAILED",
        "Chrome Headless 120.0.6099.109 (Linux x86_64): Executed 42 of 42 SUCCESS (0.5 secs / 0.4 secs)",
    ),
    (
        "pytest-test-failed",
        "_________________________________ test_readme __________________________________",
        "________________________________________________________________________________",
    ),
    (
        "unittest-test-failed",
        "FAIL: test_parse_empty (tests.test_parser.ParserTest)",
        "FAIL: see the log above",
    ),
    (
        "go-test-failed",
        "--- FAIL: TestSeparator (0.03s)",
        "--- PASS: TestSeparator (0.03s)",
    ),
    (
        "cargo-test-failed",
        "---- tests::parses_empty_input stdout ----",
        "---- end of captured output ----",
    ),
    (
        "dotnet-test-failed",
        "    App.Tests.ParserFixture.Should_parse_empty_input [FAIL]",
        "    App.Tests.ParserFixture.Should_parse_empty_input [PASS]",
    ),
    (
        "xctest-failed",
        "Test Case '-[AppTests.ParserTests testParsesEmptyInput]' failed (0.012 seconds).",
        "Test Case '-[AppTests.ParserTests testParsesEmptyInput]' passed (0.012 seconds).",
    ),
    (
        "phpunit-failures",
        "There was 1 failure:\n\n>>1) ParserTest::testParsesEmptyInput\nFailed asserting that false is true.",
        "There was 1 warning:\n\n1) ParserTest::testDeprecated",
    ),
    (
        "rspec-failures",
        "Failures:\n\n>>  1) Parser parses an empty input\n     Failure/Error: expect(x).to eq(10)",
        "Pending: (Failures listed here are expected and do not affect your suite's status)",
    ),
    (
        "rspec-load-error",
        "An error occurred while loading ./spec/requests/users_spec.rb.",
        "Loading ./spec/requests/users_spec.rb",
    ),
    (
        "minitest-failed",
        "  1) Failure:\nParserTest#test_empty [test/parser_test.rb:12]:",
        "  1) Setup",
    ),
    (
        "tap-not-ok",
        "not ok 3 - parses an empty input",
        "ok 3 - parses an empty input",
    ),
    (
        "testthat-failed",
        "── 1. Failure: parses an empty input (@test-parser.R#12)  ──────────────────────",
        "[ OK: 797 | SKIPPED: 0 | WARNINGS: 0 | FAILED: 0 ]",
    ),
    (
        "exunit-test-failed",
        "  1) test parses an empty input (App.ParserTest)",
        "  1) see the list below (App.ParserTest) is fine",
    ),
    (
        "common-test-failed",
        "parser_SUITE:parses_empty_input failed on line 696",
        "parser_SUITE:parses_empty_input passed",
    ),
    (
        "julia-test-failed",
        "Test Failed at /home/runner/work/App.jl/test/runtests.jl:12",
        "Test Summary: | Pass  Total",
    ),
    (
        "tasty-test-failed",
        "      tables:                                                        FAIL (0.06s)",
        "      tables:                                                        OK (0.06s)",
    ),
    (
        "test-failed",
        "test tests::parses_empty_input ... FAILED",
        "test tests::parses_empty_input ... ok",
    ),
    (
        "test-failed",
        "FAIL: test_overflow_is_reported (tests/test_stack.c:23)",
        "PASS: test_overflow_is_reported",
    ),
    (
        "expected-mismatch",
        "    repo_test.go:131: expected 'alpha' but got 'beta'",
        "expected output written to golden/alpha.txt",
    ),
    (
        "rspec-rerun",
        "rspec ./spec/models/parser_spec.rb:29 # Parser parses an empty input",
        "rspec ./spec/models/parser_spec.rb",
    ),
    // ---- weaker signs
    (
        "deadline-exceeded",
        "Error: rpc error: code = DeadlineExceeded desc = context deadline exceeded",
        "deadline: 2024-06-30 (exceeded budget by 0)",
    ),
    (
        "timed-out",
        "Error: timeout of 60000ms exceeded. Ensure the done() callback is being called in this test.",
        "timeout is set to 60000ms",
    ),
    (
        "panic",
        "panic: runtime error: index out of range [3] with length 3",
        "no panic here: recovered gracefully",
    ),
    (
        "usage-error",
        "flag provided but not defined: -trace2_event_file",
        "flag -trace2-event-file provided",
    ),
    (
        "shell-error",
        "/home/travis/.travis/functions: line 104: ./install-jdk.sh: No such file or directory",
        "No such file or directory errors are retried by the installer",
    ),
    (
        "python-traceback",
        "Traceback (most recent call last):",
        "print the traceback of the last call",
    ),
    (
        "uncaught-exception",
        "Exception in thread \"main\" java.lang.IllegalStateException: not started",
        "Exceptions in threads are logged to app.log",
    ),
    (
        "diagnostic",
        "./thefuck/rules/git_push.py:12:1: E302 expected 2 blank lines, found 1",
        "/home/travis/.rvm/gems/ruby-2.6.3/gems/bundler-1.17.3/lib/bundler/cli/exec.rb:74:in `load'",
    ),
    (
        "rake-aborted",
        "rake aborted!\n>>ActiveRecord::PendingMigrationError: Migrations are pending.",
        "rake aborted the previous attempt",
    ),
    (
        "warnings-as-errors",
        "compile: warnings being treated as errors\n>>parser.erl:127: import lists:umerge/1 is unused",
        "warnings are not treated as errors here",
    ),
    // ---- summaries
    (
        "tests-failed",
        "test result: FAILED. 41 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        "test result: ok. 42 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
    ),
    (
        "make-failed",
        ">>gcc: fatal: no input files\nmake: *** [Makefile:12: all] Error 1",
        "make: Nothing to be done for 'all'.",
    ),
    (
        "npm-script-failed",
        ">>[02:22:53] Task list is empty\nnpm ERR! Test failed.  See above for more details.",
        "npm WARN deprecated inflight@1.0.6: This module is not supported",
    ),
    (
        "build-tool-failed",
        ">>(./docs/intro.md): found character that cannot start any token while scanning at line 8 column 1\nFAILURE!!! 1 files were unable to be parsed!",
        "BUILD SUCCESSFUL in 12s",
    ),
];

/// The snippet without `>>` marks, and the 0-based index of its evidence line
/// (the marked one, else the first).
pub(crate) fn parse(snippet: &str) -> (String, usize) {
    let mut evidence = 0;
    let lines: Vec<&str> = snippet
        .lines()
        .enumerate()
        .map(|(i, l)| match l.strip_prefix(">>") {
            Some(rest) => {
                evidence = i;
                rest
            }
            None => l,
        })
        .collect();
    (lines.join("\n"), evidence)
}

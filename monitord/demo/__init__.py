"""The demo `make run` starts (`run`), its fake ZAP (`fakezap`), synthetic access logs (`synth`)
and the bundled catalogue (`data/`): made-up parts that show monitord working, kept out of the
product. Nothing imports this package but the CLI's `demo` command and the tests."""

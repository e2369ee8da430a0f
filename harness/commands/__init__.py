"""One module per `harness` command: its flags (`add_parser(subparsers)`) and what it runs (`cmd_*`);
harness.cli builds the parser from them. common.py holds what several commands share."""

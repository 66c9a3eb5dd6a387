"""The command layer: one module per group of `clsf` subcommands, each subcommand's parser beside
its command function (`cmd_*`), which parses nothing more and calls library functions. clsf.cli
builds the parser from every module's `add(sub)` and turns errors into one line and an exit code."""

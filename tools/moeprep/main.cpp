// moeprep: turn Hugging Face MoE checkpoints into kernel-ready shards, and prove they are
// still the same model. See README.md for the commands and the exit codes.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.h"
#include "core/version.h"
#include "exit_codes.h"

using namespace moeprep;

int main(int argc, char** argv) {
  CLI::App app{"moeprep: convert Hugging Face Mixture-of-Experts checkpoints into kernel-ready shards, and verify them"};
  app.name("moeprep");
  app.set_version_flag("--version", std::string("moeprep ") + kVersion);
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 verification failed, 2 usage error, 3 bad input, 4 I/O error.\n"
      "Run 'moeprep <command> --help' for a command's options.");
  cli::GlobalOptions global;
  CLI::App* convert = app.add_subcommand("convert", "Convert a checkpoint into kernel-ready shards");
  CLI::App* verify = app.add_subcommand("verify", "Check a converted directory (structure, hashes, flags, round trip, numerics)");
  CLI::App* inspect = app.add_subcommand("inspect", "Show what a checkpoint or converted directory holds");
  CLI::App* generate = app.add_subcommand("generate", "Write a deterministic synthetic checkpoint (tests, benchmarks)");
  for (CLI::App* sub : {convert, verify, inspect, generate}) {
    sub->add_flag("--json", global.json, "Machine-readable output on stdout");
    sub->add_flag("-q,--quiet", global.quiet, "No progress output");
  }
  const cli::CommandRunner run_convert = cli::add_convert_command(*convert, global);
  const cli::CommandRunner run_verify = cli::add_verify_command(*verify, global);
  const cli::CommandRunner run_inspect = cli::add_inspect_command(*inspect, global);
  const cli::CommandRunner run_generate = cli::add_generate_command(*generate, global);

  try {
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "moeprep: error: %s\n", e.what());
    if (argc > 1) std::fprintf(stderr, "Run 'moeprep --help' or 'moeprep <command> --help'.\n");
    return cli::kExitUsage;
  }
  try {
    if (convert->parsed()) return run_convert();
    if (verify->parsed()) return run_verify();
    if (inspect->parsed()) return run_inspect();
    if (generate->parsed()) return run_generate();
  } catch (const Error& e) {
    std::fprintf(stderr, "moeprep: error: %s\n", e.what());
    return cli::exit_code_for(e.kind());
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "moeprep: error: out of memory\n");
    return cli::kExitIo;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moeprep: error: internal: %s\n", e.what());
    return cli::kExitInternal;
  }
  return cli::kExitUsage;
}

#pragma once
// Each subcommand registers its options on the app and returns the function that runs it.
#include <functional>

#include <CLI/CLI.hpp>

namespace moeprep::cli {

struct GlobalOptions {
  bool json = false;
  bool quiet = false;
};

using CommandRunner = std::function<int()>;

CommandRunner add_convert_command(CLI::App& app, const GlobalOptions& global);
CommandRunner add_verify_command(CLI::App& app, const GlobalOptions& global);
CommandRunner add_inspect_command(CLI::App& app, const GlobalOptions& global);
CommandRunner add_generate_command(CLI::App& app, const GlobalOptions& global);

}  // namespace moeprep::cli

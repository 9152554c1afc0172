#pragma once
// Every `kvsim <command>` lives in its own apps/cmd_<name>.cc, which defines one
// Register<Name>Command(CLI::App&) and is listed once in apps/commands.def.
#include <CLI/CLI.hpp>

namespace kvsim::apps {

#define KVSIM_COMMAND(name, registrar) void registrar(CLI::App& app);
#include "apps/commands.def"
#undef KVSIM_COMMAND

}  // namespace kvsim::apps

// mqttbroker_passwd: writes password files in Mosquitto 2.0's format, as mosquitto_passwd does, for
// the server's --password-file (and for Mosquitto itself: the entries are the same).
//   mqttbroker_passwd -c FILE USER            a new file (replacing one there), the password asked
//   mqttbroker_passwd FILE USER               USER added, or its password changed
//   mqttbroker_passwd -b FILE USER PASSWORD   the password from the command line (scripts; it shows
//                                             in the process list)
//   mqttbroker_passwd -D FILE USER            USER removed
// Other lines of the file are kept as they are; the file is replaced in one rename, so a server
// reading it on SIGHUP sees the old file or the new one, never half of either.
#include <mqttbroker/auth/password_file.hpp>

#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

namespace {

/// One line of standard input; without echo when it is a terminal.
std::optional<std::string> read_password(const char* prompt) {
  const bool tty = isatty(STDIN_FILENO) != 0;
  termios old{};
  if (tty) {
    fmt::print(stderr, "{}", prompt);
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
  }
  std::string line;
  const bool got = static_cast<bool>(std::getline(std::cin, line));
  if (tty) {
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    fmt::print(stderr, "\n");
  }
  if (!got) return std::nullopt;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

/// The user a line of a password file is for; empty for comments, blank and broken lines.
std::string_view user_of(std::string_view line) {
  if (line.empty() || line.front() == '#') return {};
  const std::size_t colon = line.find(':');
  return colon == std::string_view::npos ? std::string_view{} : line.substr(0, colon);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"mqttbroker_passwd: manage a password file in Mosquitto 2.0's format (PBKDF2-SHA512)"};
  bool create = false, batch = false, remove = false;
  unsigned iterations = mqttbroker::auth::password_file::default_iterations;
  std::string file, user, password;
  app.add_flag("-c", create, "make a new file, replacing one that is there");
  app.add_flag("-b", batch, "take the password from the command line");
  app.add_flag("-D", remove, "remove the user");
  app.add_option("-I", iterations, "PBKDF2 iterations")
      ->capture_default_str()
      ->check(CLI::Range(1u, mqttbroker::auth::password_file::max_iterations));
  app.add_option("file", file, "the password file")->required();
  app.add_option("user", user, "the user name")->required();
  app.add_option("password", password, "the password, with -b");
  app.set_version_flag("--version", fmt::format("mqttbroker_passwd {}.{}.{}", MQTTBROKER_VERSION_MAJOR,
                                                MQTTBROKER_VERSION_MINOR, MQTTBROKER_VERSION_PATCH));
  CLI11_PARSE(app, argc, argv);
  if (batch != (app.count("password") > 0)) {
    fmt::print(stderr, "mqttbroker_passwd: a password on the command line goes with -b, and -b needs one\n");
    return 1;
  }
  if (remove && (create || batch)) {
    fmt::print(stderr, "mqttbroker_passwd: -D takes neither -c nor -b\n");
    return 1;
  }

  std::vector<std::string> lines;
  if (!create) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      fmt::print(stderr, "mqttbroker_passwd: cannot read {} (-c makes a new file)\n", file);
      return 1;
    }
    for (std::string l; std::getline(in, l);) lines.push_back(l);
  }

  std::string entry;
  if (!remove) {
    if (!batch) {
      const auto first = read_password("Password: ");
      const auto again = first ? read_password("Reenter password: ") : std::nullopt;
      if (!first || !again || *first != *again) {
        fmt::print(stderr, "mqttbroker_passwd: the passwords do not match\n");
        return 1;
      }
      password = *first;
    }
    std::error_code ec;
    entry = mqttbroker::auth::password_file::make_line(user, password, ec, iterations);
    if (ec) {
      fmt::print(stderr, "mqttbroker_passwd: user '{}': {}\n", user, ec.message());
      return 1;
    }
  }

  // The user's line is replaced where it stands (or dropped with -D); a new user goes last.
  bool found = false;
  std::ostringstream out;
  for (const std::string& l : lines) {
    if (user_of(l) == user) {
      if (!remove && !found) out << entry << '\n';
      found = true;
      continue;
    }
    out << l << '\n';
  }
  if (remove && !found) {
    fmt::print(stderr, "mqttbroker_passwd: user '{}' is not in {}\n", user, file);
    return 1;
  }
  if (!remove && !found) out << entry << '\n';

  const std::string temporary = file + ".tmp";
  {
    std::ofstream o(temporary, std::ios::binary | std::ios::trunc);
    o << out.str();
    if (!o.flush()) {
      fmt::print(stderr, "mqttbroker_passwd: cannot write {}\n", temporary);
      return 1;
    }
  }
  // A new file is the owner's alone; a changed one keeps the permissions it had.
  namespace fs = std::filesystem;
  std::error_code pec;
  const fs::file_status had = fs::status(file, pec);
  fs::permissions(temporary,
                  fs::exists(had) ? had.permissions() : fs::perms::owner_read | fs::perms::owner_write, pec);
  if (std::rename(temporary.c_str(), file.c_str()) != 0) {
    fmt::print(stderr, "mqttbroker_passwd: cannot replace {}\n", file);
    std::remove(temporary.c_str());
    return 1;
  }
  return 0;
}

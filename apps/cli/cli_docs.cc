#include "cli_docs.h"

#include <fmt/format.h>

#include <cctype>
#include <cstdint>
#include <sstream>
#include <string_view>

namespace moe::cli {
namespace {

// CLI11's type name reads "TEXT", "INT:NONNEGATIVE" or "TEXT:{a,b,c}": the
// value's name, then the descriptions of its checks.
void ReadTypeName(const std::string& type_name, OptionDoc* doc) {
  std::vector<std::string> parts;
  size_t start = 0;
  int depth = 0;
  for (size_t i = 0; i <= type_name.size(); ++i) {
    if (i < type_name.size() && type_name[i] == '{') ++depth;
    if (i < type_name.size() && type_name[i] == '}') --depth;
    if (i == type_name.size() || (type_name[i] == ':' && depth == 0)) {
      parts.push_back(type_name.substr(start, i - start));
      start = i + 1;
    }
  }
  doc->value_name = parts.empty() ? "" : parts.front();
  for (size_t p = 1; p < parts.size(); ++p) {
    const std::string& part = parts[p];
    if (part.size() < 2 || part.front() != '{' || part.back() != '}') continue;
    std::stringstream items(part.substr(1, part.size() - 2));
    std::string item;
    while (std::getline(items, item, ','))
      if (!item.empty()) doc->choices.push_back(item);
  }
}

OptionDoc DescribeOption(const CLI::Option& opt) {
  OptionDoc doc;
  for (const std::string& s : opt.get_snames())
    doc.names.push_back("-" + s);
  for (const std::string& l : opt.get_lnames())
    doc.names.push_back("--" + l);
  if (!opt.nonpositional()) doc.positional = opt.get_name();
  if (opt.get_type_size_max() > 0) ReadTypeName(opt.get_type_name(), &doc);
  doc.delimiter = opt.get_delimiter();
  doc.description = opt.get_description();
  doc.default_value = opt.get_default_str();
  doc.required = opt.get_required();
  return doc;
}

void AddOptions(const CLI::App& app, CommandDoc* doc) {
  for (const CLI::Option* opt : app.get_options()) {
    if (opt->get_group().empty()) continue;  // hidden
    doc->options.push_back(DescribeOption(*opt));
  }
  // Option groups are nameless subcommands whose options belong to `app`.
  for (const CLI::App* group :
       app.get_subcommands([](const CLI::App* s) { return s->get_name().empty(); })) {
    AddOptions(*group, doc);
  }
}

CommandDoc Describe(const CLI::App& app, std::vector<std::string> path) {
  CommandDoc doc;
  doc.path = std::move(path);
  doc.description = app.get_description();
  doc.footer = app.get_footer();
  doc.requires_command = app.get_require_subcommand_min() > 0;
  AddOptions(app, &doc);
  for (const CLI::App* sub : app.get_subcommands(
           [](const CLI::App* s) { return !s->get_name().empty() && !s->get_group().empty(); })) {
    std::vector<std::string> sub_path = doc.path;
    sub_path.push_back(sub->get_name());
    doc.commands.push_back(Describe(*sub, std::move(sub_path)));
  }
  return doc;
}

std::string Join(const std::vector<std::string>& items, const std::string& separator) {
  std::string out;
  for (const std::string& item : items)
    out += (out.empty() ? "" : separator) + item;
  return out;
}

// ---- bash ----

std::string ShellQuote(const std::string& text) {
  std::string out = "'";
  for (char c : text)
    out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// A -W word list for compgen, which expands it again (quote removal): each
// word's special characters backslashed, the whole quoted for the script.
std::string CompgenWords(const std::vector<std::string>& words) {
  std::vector<std::string> escaped;
  for (const std::string& w : words) {
    std::string e;
    for (char c : w) {
      if (std::string_view("\\'\"$` \t*?[]{}()<>|&;!~#").find(c) != std::string_view::npos) {
        e += '\\';
      }
      e += c;
    }
    escaped.push_back(e);
  }
  return ShellQuote(Join(escaped, " "));
}

std::string Identifier(const std::string& name) {
  std::string out;
  for (char c : name)
    out += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return out;
}

bool IsNumber(const std::string& value_name) {
  return value_name == "INT" || value_name == "UINT" || value_name == "FLOAT" ||
         value_name == "NUMBER";
}

void Walk(const CommandDoc& doc, const std::function<void(const CommandDoc&)>& visit) {
  visit(doc);
  for (const CommandDoc& sub : doc.commands)
    Walk(sub, visit);
}

// ---- roff ----

// Text for a roff line: backslashes escaped, non-ASCII as \[uXXXX], a line
// that would start with a control character protected.
std::string Roff(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\\') {
      out += "\\e";
    } else if (c == '-') {
      out += "\\-";
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      // Decode one UTF-8 sequence (a malformed byte prints as itself).
      int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
      uint32_t code = extra == 3 ? (c & 0x07u) : extra == 2 ? (c & 0x0Fu) : (c & 0x1Fu);
      bool ok = extra > 0 && i + extra < text.size();
      for (int k = 1; ok && k <= extra; ++k) {
        const auto next = static_cast<unsigned char>(text[i + k]);
        if ((next & 0xC0u) != 0x80u) ok = false;
        code = (code << 6) | (next & 0x3Fu);
      }
      if (ok) {
        out += fmt::format("\\[u{:04X}]", code);
        i += extra;
      } else {
        out += "?";
      }
    }
  }
  return out;
}

// Paragraph text: one roff line per input line, none starting with '.' or '\''.
std::string RoffLines(const std::string& text) {
  std::string out;
  std::stringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty()) {
      out += ".PP\n";
      continue;
    }
    if (line.front() == '.' || line.front() == '\'') out += "\\&";
    out += Roff(line) + "\n";
  }
  return out;
}

std::string Bold(const std::string& text) {
  return "\\fB" + Roff(text) + "\\fR";
}

std::string Italic(const std::string& text) {
  return "\\fI" + Roff(text) + "\\fR";
}

void ManOptions(const std::vector<OptionDoc>& options, std::string* out) {
  for (const OptionDoc& o : options) {
    *out += ".TP\n";
    if (!o.positional.empty()) {
      *out += Italic(o.positional);
    } else {
      std::vector<std::string> names;
      for (const std::string& n : o.names)
        names.push_back(Bold(n));
      *out += Join(names, ", ");
      if (!o.value_name.empty()) *out += " " + Italic(o.value_name);
    }
    *out += "\n";
    std::string text = o.description.empty() ? std::string("(undocumented)") : o.description;
    *out += RoffLines(text);
    // What CLI11 knows beyond the description, each on a line of its own.
    if (!o.choices.empty()) {
      *out += ".br\n" + RoffLines(o.delimiter != '\0'
                                      ? fmt::format("Each of: {} (several: separated by '{}').",
                                                    Join(o.choices, ", "), o.delimiter)
                                      : "One of: " + Join(o.choices, ", ") + ".");
    }
    if (!o.default_value.empty()) *out += ".br\n" + RoffLines("Default: " + o.default_value + ".");
    if (o.required) *out += ".br\n" + RoffLines("Required.");
  }
}

// One line: the command's words in bold, then what may follow.
std::string Synopsis(const CommandDoc& doc) {
  std::string out = Bold(Join(doc.path, " "));
  if (!doc.options.empty()) out += " [\\fIOPTIONS\\fR]";
  for (const OptionDoc& o : doc.options) {
    if (o.positional.empty()) continue;
    out += " " + (o.required ? Italic(o.positional) : "[" + Italic(o.positional) + "]");
  }
  if (!doc.commands.empty()) {
    out += doc.requires_command ? " \\fICOMMAND\\fR [\\fICOMMAND OPTIONS\\fR]"
                                : " [\\fICOMMAND\\fR [\\fICOMMAND OPTIONS\\fR]]";
  }
  return out + "\n";
}

void ManCommands(const CommandDoc& doc, std::string* out) {
  for (const CommandDoc& sub : doc.commands) {
    *out += ".SS \"" + Roff(Join(sub.path, " ")) + "\"\n";
    *out += Synopsis(sub) + ".PP\n";
    *out += RoffLines(sub.description.empty() ? std::string("(undocumented)") : sub.description);
    if (!sub.footer.empty()) *out += ".PP\n" + RoffLines(sub.footer);
    ManOptions(sub.options, out);
    ManCommands(sub, out);
  }
}

}  // namespace

CommandDoc DescribeApp(const CLI::App& app) {
  return Describe(app, {app.get_name()});
}

std::string BashCompletion(const CLI::App& app) {
  const CommandDoc root = DescribeApp(app);
  const std::string program = root.path.front();
  const std::string fn = "_" + Identifier(program);
  auto key = [](const CommandDoc& d) { return Join(d.path, "/"); };

  // "PATH OPTION" for every option that takes a value, and what to offer.
  std::vector<std::string> takes_value;
  std::string value_cases;
  std::vector<std::string> descend;
  std::string word_cases;
  Walk(root, [&](const CommandDoc& d) {
    std::vector<std::string> options, commands;
    for (const OptionDoc& o : d.options) {
      for (const std::string& n : o.names) {
        options.push_back(n);
        if (o.value_name.empty()) continue;
        const std::string pattern = ShellQuote(key(d) + " " + n);
        takes_value.push_back(pattern);
        if (!o.choices.empty() && o.delimiter != '\0') {
          // A list in one word ("a,b"): complete the item after the last delimiter.
          const std::string sep = ShellQuote(std::string(1, o.delimiter));
          value_cases += fmt::format(
              "    {0}) if [[ $cur == *{1}* ]]; then COMPREPLY=($(compgen -P \"${{cur%{1}*}}\"{1} "
              "-W "
              "{2} -- \"${{cur##*{1}}}\")); else COMPREPLY=($(compgen -W {2} -- \"$cur\")); fi "
              ";;\n",
              pattern, sep, CompgenWords(o.choices));
        } else if (!o.choices.empty()) {
          value_cases += fmt::format("    {}) COMPREPLY=($(compgen -W {} -- \"$cur\")) ;;\n",
                                     pattern, CompgenWords(o.choices));
        } else if (IsNumber(o.value_name)) {
          value_cases += fmt::format("    {}) COMPREPLY=() ;;\n", pattern);
        }
      }
    }
    for (const CommandDoc& sub : d.commands) {
      commands.push_back(sub.path.back());
      descend.push_back(ShellQuote(key(sub)));
    }
    word_cases += fmt::format("    {}) options={}; commands={} ;;\n", ShellQuote(key(d)),
                              ShellQuote(Join(options, " ")), ShellQuote(Join(commands, " ")));
  });

  std::string s;
  s += fmt::format("# bash completion for {0}\n", program);
  s += fmt::format(
      "# Generated from {0}'s command-line definition ({0} --generate-completion bash);"
      " do not edit.\n\n",
      program);
  s += fmt::format(
      "{}_takes_value() {{  # PATH WORD: does option WORD of command PATH take a value?\n", fn);
  s += "  case \"$1 $2\" in\n";
  if (!takes_value.empty()) s += "    " + Join(takes_value, "|") + ") return 0 ;;\n";
  s += "  esac\n  return 1\n}\n\n";
  s += fmt::format("{}() {{\n", fn);
  s += "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"\" path=" + ShellQuote(program) +
       " i word options commands\n";
  s += "  ((COMP_CWORD > 0)) && prev=\"${COMP_WORDS[COMP_CWORD - 1]}\"\n";
  s += "  # --option=value: bash splits at '=' (COMP_WORDBREAKS)\n";
  s += "  if [[ $cur == \"=\" ]]; then\n    cur=\"\"\n";
  s += "  elif [[ $prev == \"=\" ]] && ((COMP_CWORD > 1)); then\n";
  s += "    prev=\"${COMP_WORDS[COMP_CWORD - 2]}\"\n  fi\n";
  s += "  for ((i = 1; i < COMP_CWORD; i++)); do\n";
  s += "    word=\"${COMP_WORDS[i]}\"\n";
  s += fmt::format("    if {}_takes_value \"$path\" \"$word\"; then\n", fn);
  s += "      ((i++))\n";
  s += "      [[ ${COMP_WORDS[i]} == \"=\" ]] && ((i++))\n";
  s += "      continue\n    fi\n";
  if (!descend.empty()) {
    s += "    case \"$path/$word\" in\n";
    s += "      " + Join(descend, "|") + ") path=\"$path/$word\" ;;\n";
    s += "    esac\n";
  }
  s += "  done\n";
  s += fmt::format("  if {}_takes_value \"$path\" \"$prev\"; then\n", fn);
  s += "    case \"$path $prev\" in\n";
  s += value_cases;
  s += "    *) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- \"$cur\")) ;;\n";
  s += "    esac\n    return 0\n  fi\n";
  s += "  case \"$path\" in\n" + word_cases + "  esac\n";
  s += "  if [[ $cur == -* || -z $commands ]]; then\n";
  s += "    COMPREPLY=($(compgen -W \"$options\" -- \"$cur\"))\n";
  s += "  else\n    COMPREPLY=($(compgen -W \"$commands\" -- \"$cur\"))\n  fi\n";
  s += "  return 0\n}\n\n";
  s += fmt::format("complete -F {} {}\n", fn, program);
  return s;
}

std::string ManPage(const CLI::App& app, const std::string& version_line) {
  const CommandDoc root = DescribeApp(app);
  const std::string program = root.path.front();
  std::string upper;
  for (char c : program)
    upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  // CLI11 descriptions read "moectl: what it does"; NAME wants "what it does".
  std::string summary = root.description;
  if (summary.rfind(program + ":", 0) == 0) summary = summary.substr(program.size() + 1);
  while (!summary.empty() && summary.front() == ' ')
    summary.erase(summary.begin());

  std::string m;
  m += fmt::format(
      ".\\\" Generated from {0}'s command-line definition ({0} --generate-man); "
      "do not edit.\n",
      program);
  m += fmt::format(".TH {} 1 \"\" \"{}\" \"User Commands\"\n", Roff(upper), Roff(version_line));
  m += ".SH NAME\n" + Roff(program) + " \\- " + Roff(summary) + "\n";
  m += ".SH SYNOPSIS\n" + Synopsis(root);
  m += ".SH DESCRIPTION\n" + RoffLines(root.description);
  if (!root.footer.empty()) m += ".PP\n" + RoffLines(root.footer);
  if (!root.commands.empty()) {
    std::vector<std::string> names;
    for (const CommandDoc& c : root.commands)
      names.push_back(Bold(c.path.back()));
    m += ".PP\nCommands: " + Join(names, ", ") + ".\n";
  }
  m += ".SH OPTIONS\n";
  ManOptions(root.options, &m);
  if (!root.commands.empty()) {
    m += ".SH COMMANDS\n";
    ManCommands(root, &m);
  }
  m += ".SH EXIT STATUS\n";
  m += ".TP\n.B 0\nSuccess (also for \\fB\\-\\-help\\fR and \\fB\\-\\-version\\fR).\n";
  m += ".TP\n.B 1\nFailure: the work could not be done (the message says why).\n";
  m += ".TP\n.B 2\nUsage error: an unknown command or option, a missing or bad value.\n";
  return m;
}

}  // namespace moe::cli

//! The terminal side of the library's callbacks: [`Terminal`] prints the progress events of
//! operations on stderr, [`Generators`] adds a progress line per machine while vars
//! generators run, [`TerminalPrompter`] asks vars prompts on the terminal.

use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clan_error::Hint as _;
use clan_lib::vars::{Generated, PromptValues, Prompter};
use clan_lib::{Event, Progress};
use clan_vars::{GeneratorStep, PromptRequest};
use zeroize::Zeroizing;

use super::output::{printer, MachineProgress};
use crate::report::hinted;

/// Prints what operations report as they go, on stderr.
pub struct Terminal;

impl Progress for Terminal {
    fn event(&self, event: Event) {
        let printer = printer();
        match event {
            Event::WaitingForLock { path, holder } => match holder {
                Some(holder) => printer.note(format_args!(
                    "waiting for the clan lock `{}`: {holder}",
                    path.display()
                )),
                None => printer.note(format_args!(
                    "waiting for another clan process to release the clan lock `{}`",
                    path.display()
                )),
            },
            Event::Recovered { what } => printer.note(format_args!("recovered: {what}")),
            Event::Generator {
                machine,
                generator,
                step,
            } => show_generator(
                &MachineProgress::lines_only(),
                machine.as_deref(),
                &generator,
                step,
            ),
            Event::VarsGenerated(generated) => print_generated(&generated),
            Event::Vm(event) => show_vm(&event),
            Event::Deploy(event) => {
                let failed = matches!(*event, clan_deploy::events::Event::Failed { .. });
                for line in event.human() {
                    let line = format!("[{}] {line}", event.machine());
                    if failed {
                        printer.failure(line);
                    } else {
                        printer.note(line);
                    }
                }
            }
        }
    }
}

/// [`Terminal`], showing vars generators as they run: a progress line per machine (`shared`
/// for shared generators) on a terminal, `[machine] generator …` lines otherwise.
pub struct Generators {
    progress: MachineProgress,
}

impl Generators {
    pub fn new() -> Generators {
        Generators {
            progress: MachineProgress::new(),
        }
    }

    /// Ends the progress lines (the generation is over).
    pub fn finish(&self) {
        self.progress.finish();
    }
}

impl Progress for Generators {
    fn event(&self, event: Event) {
        match event {
            Event::Generator {
                machine,
                generator,
                step,
            } => show_generator(&self.progress, machine.as_deref(), &generator, step),
            Event::VarsGenerated(generated) => {
                self.finish();
                print_generated(&generated);
            }
            other => Terminal.event(other),
        }
    }
}

/// `generator` of `machine` reached `step`: running shows on its line (`-v`: a line of its
/// own), the outcome is a line. Why a generator failed follows when the run ends.
fn show_generator(
    progress: &MachineProgress,
    machine: Option<&str>,
    generator: &str,
    step: GeneratorStep,
) {
    let machine = machine.unwrap_or("shared");
    match step {
        GeneratorStep::Running => progress.stage(machine, &format!("{generator}: running")),
        GeneratorStep::Generated => {
            progress.lines(machine, &[format!("{generator}: generated")], None)
        }
        GeneratorStep::Failed => progress.lines(machine, &[format!("{generator}: failed")], None),
    }
}

/// How many generators ran, and each that failed with its hint.
pub fn print_generated(generated: &Generated) {
    let printer = printer();
    printer.note(format_args!(
        "generated {} generator runs",
        generated.runs.len()
    ));
    for (key, error) in &generated.failed {
        printer.error(format_args!("{key}: {error}"), error.hint().as_deref());
    }
}

/// Asks prompts on the terminal (without one it answers nothing), after the answers of
/// `--prompt-values FILE` (`-`: stdin), read when first needed.
pub struct TerminalPrompter {
    path: Option<PathBuf>,
    values: Option<PromptValues>,
}

impl TerminalPrompter {
    pub fn new(prompt_values: Option<PathBuf>) -> TerminalPrompter {
        TerminalPrompter {
            path: prompt_values,
            values: None,
        }
    }
}

impl Prompter for TerminalPrompter {
    fn interactive(&self) -> bool {
        std::io::stdin().is_terminal()
    }

    fn prompt_values(
        &mut self,
    ) -> Result<Option<&PromptValues>, Box<dyn std::error::Error + Send + Sync>> {
        if let (None, Some(path)) = (&self.values, &self.path) {
            self.values = Some(read_prompt_values(path)?);
        }
        Ok(self.values.as_ref())
    }

    fn ask(
        &mut self,
        request: &PromptRequest,
    ) -> Result<Zeroizing<String>, Box<dyn std::error::Error + Send + Sync>> {
        let label = if request.prompt.description.is_empty() {
            request.name.clone()
        } else {
            request.prompt.description.clone()
        };
        let title = format!("{} — {label}", request.generator);
        // A `Hinted` error stays itself inside the library's error, so its hint is shown.
        let hidden = |multiline| {
            ask_hidden_twice(&title, multiline).map_err(
                |error| -> Box<dyn std::error::Error + Send + Sync> {
                    match error.downcast::<crate::report::Hinted>() {
                        Ok(hinted) => Box::new(hinted),
                        Err(error) => error.into(),
                    }
                },
            )
        };
        Ok(match request.prompt.kind {
            clan_config::PromptType::Hidden => hidden(false)?,
            clan_config::PromptType::MultilineHidden => hidden(true)?,
            clan_config::PromptType::Line => {
                printer().ask(format_args!("{title}: "));
                let mut line = Zeroizing::new(String::new());
                std::io::stdin().lock().read_line(&mut line)?;
                Zeroizing::new(line.trim_end_matches(['\n', '\r']).to_owned())
            }
            clan_config::PromptType::Multiline => {
                printer().ask(format_args!(
                    "{title} (finish with Ctrl-D on an empty line):\n"
                ));
                let mut text = Zeroizing::new(String::new());
                std::io::stdin().lock().read_to_string(&mut text)?;
                text
            }
        })
    }
}

/// Asks for a secret on the terminal without echoing it, twice; `multiline` reads until
/// Ctrl-D instead of one line.
pub fn ask_hidden_twice(title: &str, multiline: bool) -> anyhow::Result<Zeroizing<String>> {
    let ask = |prompt: &str| -> std::io::Result<Zeroizing<String>> {
        if multiline {
            read_hidden_until_eof(prompt)
        } else {
            rpassword::prompt_password(format!("{prompt}: ")).map(Zeroizing::new)
        }
    };
    for _ in 0..3 {
        let first = ask(title)?;
        let second = ask("Again, to confirm")?;
        if first == second {
            return Ok(first);
        }
        printer().ask("the two entries differ; try again\n");
    }
    Err(hinted(
        "the two entries differed three times",
        "run `clan vars generate` again",
    ))
}

/// Reads the terminal until Ctrl-D with echo off (newlines still echo, to show progress).
fn read_hidden_until_eof(prompt: &str) -> std::io::Result<Zeroizing<String>> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&stdin, OptionalActions::Now, &quiet)?;
    // Only now: whatever is typed after the prompt appears is not echoed.
    printer().ask(format_args!(
        "{prompt} (hidden; finish with Ctrl-D on an empty line):\n"
    ));
    let mut text = Zeroizing::new(String::new());
    let read = stdin.lock().read_to_string(&mut text);
    tcsetattr(&stdin, OptionalActions::Now, &saved)?;
    read.map(|_| text)
}

/// Prompt answers from `path` (`-`: stdin).
fn read_prompt_values(path: &Path) -> anyhow::Result<PromptValues> {
    let mut json = Zeroizing::new(Vec::new());
    if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .read_to_end(&mut json)
            .context("reading prompt values from stdin")?;
        return Ok(PromptValues {
            json,
            source: "stdin".to_owned(),
        });
    }
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(&mut json))
        .with_context(|| format!("reading prompt values from `{}`", path.display()))?;
    Ok(PromptValues {
        json,
        source: format!("`{}`", path.display()),
    })
}

/// A VM's start: how it runs and why, then how long the boot took.
fn show_vm(event: &clan_lib::vms::VmEvent) {
    let printer = printer();
    match event {
        clan_lib::vms::VmEvent::Accel { machine, accel } => printer.note(format_args!(
            "[{machine}] booting a micro VM with {} ({})",
            accel.mode.as_str(),
            accel.reason
        )),
        clan_lib::vms::VmEvent::Booted {
            machine,
            ssh_port,
            times,
            new_disk,
        } => printer.note(format_args!(
            "[{machine}] sshd answers on 127.0.0.1:{ssh_port} after {:.1} s{}",
            times.launch_to_sshd_s,
            if *new_disk { " (a new disk)" } else { "" }
        )),
    }
}

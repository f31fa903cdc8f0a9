//! The timers of backup providers: a provider with `startAt` gets `clan-backup-<name>.timer`
//! running `clan agent backups create --provider <name>`, one with `checkAt` gets
//! `clan-backup-check-<name>.timer` running `… check`. Written here, like the firewall's unit,
//! so every provider (a user's own too) is scheduled the same way and its runs land in the
//! machine's backup status.

use clan_config::{MachineConfig, Unit, UnitName};

use crate::{InvalidConfig, STATE_DIR};

/// `config` with its providers' timer and service units added.
pub fn with_backup_timers(config: &MachineConfig) -> Result<MachineConfig, InvalidConfig> {
    let mut config = config.clone();
    let providers = config.backups.providers.clone();
    for (name, provider) in &providers {
        let jobs = [
            ("clan-backup", "create", "Back up with", &provider.start_at),
            (
                "clan-backup-check",
                "check",
                "Check the backups of",
                &provider.check_at,
            ),
        ];
        for (prefix, verb, what, calendar) in jobs {
            // A calendar event is one line by its type: it cannot add directives.
            let Some(calendar) = calendar else { continue };
            let description = format!("{what} {name} (clan)");
            let service = format!(
                "# Written by clan for backup provider {name}.\n[Unit]\nDescription={description}\n\
                 Wants=network-online.target\nAfter=network-online.target\n\n[Service]\n\
                 Type=oneshot\nExecStart={STATE_DIR}/bin/clan agent backups {verb} --provider {name}\n"
            );
            let timer = format!(
                "# Written by clan for backup provider {name}.\n[Unit]\nDescription={description}\n\n\
                 [Timer]\nOnCalendar={calendar}\nPersistent=true\nRandomizedDelaySec=60\n\n\
                 [Install]\nWantedBy=timers.target\n"
            );
            // The service runs only when its timer fires; the timer starts with the deploy.
            for (unit, content, enabled) in [
                (format!("{prefix}-{name}.service"), service, false),
                (format!("{prefix}-{name}.timer"), timer, true),
            ] {
                let unit = UnitName::parse(&unit, "backup timer unit")?;
                if config.units.contains_key(&unit) {
                    return Err(InvalidConfig {
                        subject: format!("unit `{unit}`"),
                        reason: format!("clan writes it for backup provider `{name}`"),
                    });
                }
                config.units.insert(
                    unit,
                    Unit {
                        content,
                        enabled,
                        restart_on_change: true,
                        restart_triggers: Vec::new(),
                        reload_triggers: Vec::new(),
                    },
                );
            }
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(start_at: &str) -> MachineConfig {
        serde_json::from_value(serde_json::json!({
            "backups": {"providers": {"borg": {
                "create": "c", "list": "l", "restore": "r", "startAt": start_at,
            }}},
        }))
        .unwrap()
    }

    #[test]
    fn a_scheduled_provider_gets_a_timer_and_a_service_that_only_the_timer_starts() {
        let config = with_backup_timers(&config("*-*-* 01:00:00")).unwrap();
        let timer = &config.units["clan-backup-borg.timer"];
        assert!(timer.enabled);
        assert!(timer.content.contains("OnCalendar=*-*-* 01:00:00\n"));
        let service = &config.units["clan-backup-borg.service"];
        assert!(!service.enabled);
        assert!(service
            .content
            .contains("ExecStart=/var/lib/clan/bin/clan agent backups create --provider borg\n"));
        assert!(!config.units.contains_key("clan-backup-check-borg.timer"));
    }

    #[test]
    fn a_calendar_that_would_add_unit_lines_is_refused() {
        let config: Result<MachineConfig, _> = serde_json::from_value(serde_json::json!({
            "backups": {"providers": {"borg": {
                "create": "c", "list": "l", "restore": "r",
                "startAt": "daily\nExecStartPre=/bin/evil",
            }}},
        }));
        let error = config.unwrap_err().to_string();
        assert!(
            error.contains("backup provider `borg` backup schedule"),
            "{error}"
        );
    }
}

//! Who may do what. The README's role × action table is checked against [`Role::can`].

use serde::{Deserialize, Serialize};

/// A user's or an API key's role in its organisation, from most to least powerful.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Analyst,
    Admin,
    Owner,
}

/// Everything the API lets a caller do, each checked on its routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// See the organisation, its members and its results.
    Read,
    /// Upload footage and start analyses.
    Analyse,
    /// Delete uploads and their results.
    DeleteData,
    /// Create and revoke API keys, add members, change roles.
    ManageAccess,
    /// Change retention settings and read the ledger.
    ManageSettings,
    /// Credits, and the owner's rights over the organisation: export and erasure.
    ManageBilling,
}

impl Action {
    pub const ALL: [Action; 6] = [
        Action::Read,
        Action::Analyse,
        Action::DeleteData,
        Action::ManageAccess,
        Action::ManageSettings,
        Action::ManageBilling,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Analyse => "analyse",
            Action::DeleteData => "delete-data",
            Action::ManageAccess => "manage-access",
            Action::ManageSettings => "manage-settings",
            Action::ManageBilling => "manage-billing",
        }
    }
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Owner, Role::Admin, Role::Analyst, Role::Viewer];

    pub fn can(self, action: Action) -> bool {
        let least = match action {
            Action::Read => Role::Viewer,
            Action::Analyse | Action::DeleteData => Role::Analyst,
            Action::ManageAccess | Action::ManageSettings => Role::Admin,
            Action::ManageBilling => Role::Owner,
        };
        self >= least
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Analyst => "analyst",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's table is the documentation users read: it must say what the code does.
    #[test]
    fn the_readme_table_says_what_the_code_does() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("| role |").expect("the README has a role × action table");
        let rows: Vec<&str> = readme[start..].lines().take_while(|l| l.starts_with('|')).collect();
        let header: Vec<&str> = rows[0].split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        assert_eq!(header[1..], Action::ALL.map(Action::as_str), "{}", rows[0]);
        for role in Role::ALL {
            let row = rows
                .iter()
                .find(|r| r.split('|').nth(1).map(str::trim) == Some(role.as_str()))
                .expect("a row per role");
            let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
            for (action, cell) in Action::ALL.iter().zip(&cells[1..]) {
                assert_eq!(*cell == "yes", role.can(*action), "README says {role:?} {action:?} = {cell}");
            }
        }
    }
}

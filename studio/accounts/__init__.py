"""Who can sign in: users, the admin services over users, teams and credits, first-run set-up."""

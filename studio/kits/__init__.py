"""Team brand kits: what a kit holds and its checks (`settings`), admins creating, changing and deleting kits with
an audit entry each (`admin`), which kits a user may see and run (`access`), and the request a kit makes
(`requests`)."""

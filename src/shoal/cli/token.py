"""``shoal token create|revoke|list``: the service's API tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from shoal.cli.common import fail
from shoal.errors import StoreError

if TYPE_CHECKING:
    from shoal.service.tokens import Tokens


@click.group()
def token() -> None:
    """API tokens for the service (`shoal serve`): create, list, revoke.

    Tokens are kept hashed in the service database; a token is shown once, when created.
    Send it as `Authorization: Bearer <token>`.
    """


def _service_db_option(f: Any) -> Any:
    return click.option("--db", metavar="PATH_OR_URL", default="shoal-service.db",
                        show_default=True,
                        help="The service database holding the tokens: a path or "
                             "postgresql://... (as `shoal serve --db`).")(f)


def token_store(db: str, *, create: bool) -> Tokens:
    from shoal.service.tokens import open_tokens

    if "://" in db and not db.startswith(("postgresql://", "postgres://", "sqlite:///")):
        fail(f"--db {db!r}: use a path, sqlite:///path or postgresql://...")
    try:
        return open_tokens(db, create=create)
    except StoreError as exc:
        fail(str(exc))


@token.command("create")
@click.option("--read-only", is_flag=True,
              help="The token can watch jobs and metrics but not start or cancel jobs.")
@click.option("--name", default="", help="A label to recognise the token by in `list`.")
@_service_db_option
def token_create(read_only: bool, name: str, db: str) -> None:
    """Create a token; it alone is printed on the last line of standard output."""
    if not name.isprintable() or len(name) > 100:
        fail("--name must be at most 100 printable characters")
    with token_store(db, create=True) as store:
        secret, info = store.create(name=name, read_only=read_only)
    kind = "read-only token" if info.read_only else "token"
    click.echo(f"shoal: created {kind} {info.id} in {store.path}. It is shown only this once; keep "
               "it secret and send it as 'Authorization: Bearer <token>'.", err=True)
    click.echo(secret)


@token.command("revoke")
@click.argument("token_id", metavar="ID")
@_service_db_option
def token_revoke(token_id: str, db: str) -> None:
    """Revoke the token with this ID (see `shoal token list`); it stops working at once."""
    from shoal.service.tokens import PREFIX

    # never echo something that may be a secret
    shown = "the token" if token_id.startswith(PREFIX) else f"token {token_id!r}"
    with token_store(db, create=False) as store:
        if not store.revoke(token_id):
            missing = "no such token" if token_id.startswith(PREFIX) else f"no {shown}"
            fail(f"{missing} in {store.path} (see 'shoal token list')")
    click.echo(f"shoal: revoked {shown}; it no longer works", err=True)


@token.command("list")
@_service_db_option
def token_list(db: str) -> None:
    """List tokens: id, name, read-only, created, revoked (never the secrets)."""
    with token_store(db, create=False) as store:
        infos = store.list()
    rows = [("ID", "NAME", "READ-ONLY", "CREATED", "REVOKED")]
    rows += [(t.id, t.name or "-", "yes" if t.read_only else "no", t.created, t.revoked or "-")
             for t in infos]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if not infos:
        click.echo(f"shoal: no tokens in {store.path} (create one with 'shoal token create')",
                   err=True)

"""What a sync should do: PaperCut users matched to members, and the diff to carry out.

Pure computation, no I/O: ``run_sync`` reads OfficeRnD, PaperCut and the
mirror, asks here which user belongs to which member (``link_members``) and
what to change (``plan_actions``), then carries the plan out. Apart so the
matching and the diff read (and test) on their own, without the calls around them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from billing.officernd.filter import (
    INDIVIDUAL_GROUP,
    UNLINKED_GROUP,
    DesiredUser,
    email_user_name,
    fallback_user_name,
)
from billing.officernd.mirror import Mirror
from billing.officernd.models import Member

__all__ = ["SyncPlan", "Update", "link_members", "managed_groups", "plan_actions"]


@dataclass(frozen=True)
class Update:
    """A user PaperCut has: what to change."""

    name: str  # as PaperCut has it
    want: DesiredUser
    props: bool  # full name / e-mail to set
    add: bool  # to add to its group
    drop: list[str]  # managed groups to leave
    moved: bool  # from another company's group


@dataclass
class SyncPlan:
    """What a run does in PaperCut, in the order it is done: groups first, then users."""

    new_groups: list[str] = field(default_factory=list)
    creates: list[DesiredUser] = field(default_factory=list)
    recreates: list[DesiredUser] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    removes: list[tuple[str, str]] = field(default_factory=list)  # (user name, member id)
    unlinks: list[str] = field(default_factory=list)
    skipped: int = 0  # users held by another worker's pending re-creation

    @property
    def total(self) -> int:
        return (
            len(self.new_groups)
            + len(self.creates)
            + len(self.recreates)
            + len(self.updates)
            + len(self.removes)
            + len(self.unlinks)
        )


def managed_groups(groups: Iterable[str]) -> set[str]:
    """The groups a sync manages (casefold): ``groups`` and the two it always has."""
    return {g.casefold() for g in groups} | {
        INDIVIDUAL_GROUP.casefold(),
        UNLINKED_GROUP.casefold(),
    }


# --- matching PaperCut users to members ------------------------------------------------------


def link_members(
    members: Iterable[Member],
    mirror: Mapping[str, str],
    candidates: Iterable[str],
    emails: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Member id -> the existing user name that belongs to it.

    ``mirror``: our links (member id -> local user name), kept for members
    OfficeRnD still has. Then each other candidate name (PaperCut users,
    local users without a link) belongs to the member whose e-mail it is,
    whose fallback name it is, or (``emails``: user -> its e-mail in
    PaperCut) whose e-mail the user has; the lowest member id wins a tie.
    """
    ordered = sorted(members, key=lambda m: m.id)
    ids = {m.id for m in ordered}
    links = {mid: name for mid, name in mirror.items() if mid in ids}
    linked = {name.casefold() for name in links.values()}
    by_name: dict[str, str] = {}
    by_email: dict[str, str] = {}
    for member in ordered:
        if member.id in links:
            continue
        as_email = email_user_name(member.email)
        if as_email is not None:
            by_name.setdefault(as_email.casefold(), member.id)
        for fallback in (fallback_user_name(member), fallback_user_name(member, whole_id=True)):
            by_name.setdefault(fallback.casefold(), member.id)
        if member.email and member.email.strip():
            by_email.setdefault(member.email.strip().casefold(), member.id)
    for name in sorted(set(candidates)):
        key = name.casefold()
        if key in linked:
            continue
        mid = by_name.get(key)
        if mid is None and emails and emails.get(name):
            mid = by_email.get(emails[name].strip().casefold())
        if mid is not None and mid not in links:
            links[mid] = name
            linked.add(key)
    return links


# --- the diff ----------------------------------------------------------------------------------


def plan_actions(
    wanted: Mapping[str, DesiredUser],
    mirror: Mirror,
    *,
    by_member: Mapping[str, DesiredUser],
    members: Iterable[Member],
    links: Mapping[str, str],
    pc_users: Sequence[str],
    pc_groups: Sequence[str],
    member_of: Mapping[str, Mapping[str, str]],
    second_flow: bool,
    done_recreations: Collection[str],
) -> SyncPlan:
    """The PaperCut changes that make ``pc_users`` what ``wanted`` says.

    ``wanted``: user name -> member as wanted (``by_member``: the same by
    member id); ``links``: member id -> existing user name (``link_members``);
    ``member_of``: user (casefold) -> {group casefold: name} over the managed
    groups; ``done_recreations``: users (casefold) this initial sync has
    already re-created. Users ``mirror.held`` are skipped.
    """
    pc_set = {u.casefold(): u for u in pc_users}
    pc_group_set = {g.casefold() for g in pc_groups}
    member_ids = {m.id for m in members}
    # PaperCut users linked to a member (or to a member OfficeRnD no longer has, via the mirror)
    owner: dict[str, str] = {}
    for mid, name in [*mirror.links.items(), *links.items()]:  # current links win
        if name.casefold() in pc_set:
            owner[name.casefold()] = mid

    skipped = 0
    creates: list[DesiredUser] = []
    recreates: list[DesiredUser] = []
    updates: list[Update] = []
    removes: list[tuple[str, str]] = []
    unlinks: list[str] = []
    for name, want in wanted.items():
        key = name.casefold()
        if key in mirror.held:
            skipped += 1
            continue
        if key not in pc_set:
            creates.append(want)
            continue
        if second_flow and key not in done_recreations:
            recreates.append(want)
            continue
        have = member_of.get(key, {})
        add = want.group.casefold() not in have
        drop = [g for k, g in have.items() if k != want.group.casefold()]
        last = mirror.users.get(want.member_id)
        props = last is None or last != (want.email, want.full_name, True)
        if mirror.links.get(want.member_id, "").casefold() != key:
            props = True  # adopted: PaperCut's name and e-mail are not ours yet
        if add or drop or props:
            moved = add and any(k != UNLINKED_GROUP.casefold() for k in have)
            updates.append(Update(pc_set[key], want, props, add, drop, moved))
    wanted_keys = {name.casefold() for name in wanted}
    for key, name in pc_set.items():
        if key in wanted_keys or key in mirror.held:
            continue
        owner_id = owner.get(key)
        if owner_id is not None and owner_id in by_member:
            continue  # the member is wanted under another name: leave this user be
        if second_flow and (owner_id is None or owner_id not in member_ids):
            unlinks.append(name)  # no match in OfficeRnD
        elif owner_id is not None:
            removes.append((name, owner_id))

    needed_groups = {w.group for w in [*creates, *recreates]} | {
        u.want.group for u in updates if u.add
    }
    if unlinks:
        needed_groups.add(UNLINKED_GROUP)
    new_groups = sorted(g for g in needed_groups if g.casefold() not in pc_group_set)
    return SyncPlan(new_groups, creates, recreates, updates, removes, unlinks, skipped)

"""nbfed/node_registry.py's plan: one registered node per site, none for a site the inventory
no longer names (SuperLink's own registry is the integration and e2e tiers')."""

from nbfed.node_registry import plan


def node(node_id: int, name: str, key: str, status: str = "online") -> dict:
    return {"node-id": node_id, "name": name, "key": key, "status": status}


def test_a_new_site_is_registered_and_a_known_key_kept() -> None:
    todo = plan([node(1, "site-a", "aa")], {"site-a": "aa", "site-b": "bb"}, None)
    assert todo.register == ["site-b"] and todo.unregister == {} and todo.refused == {}


def test_a_site_that_made_a_new_key_keeps_only_that_one() -> None:
    todo = plan([node(1, "site-a", "old"), node(2, "site-b", "bb")], {"site-a": "new", "site-b": "bb"}, None)
    assert todo.register == ["site-a"]
    assert list(todo.unregister) == [1] and "old key" in todo.unregister[1]


def test_only_the_inventorys_sites_stay_registered() -> None:
    nodes = [node(1, "site-a", "aa"), node(2, "site-gone", "gg", "offline"), node(3, "", "xx", "registered")]
    todo = plan(nodes, {"site-a": "aa"}, ["site-a", "site-b"])
    assert sorted(todo.unregister) == [2, 3] and "not in the inventory" in todo.unregister[2]
    # without the inventory (a single site's run), nobody else is touched
    assert plan(nodes, {"site-a": "aa"}, None).unregister == {}


def test_an_unregistered_key_is_refused_with_what_to_do_and_never_unregistered_again() -> None:
    nodes = [node(1, "site-a", "aa", "unregistered")]
    todo = plan(nodes, {"site-a": "aa"}, ["site-a"])
    assert todo.register == [] and todo.unregister == {}
    assert "make the site a new key" in todo.refused["site-a"]


def test_a_key_registered_under_another_name_is_refused() -> None:
    todo = plan([node(1, "site-b", "aa")], {"site-a": "aa"}, None)
    assert "registered as site-b" in todo.refused["site-a"]

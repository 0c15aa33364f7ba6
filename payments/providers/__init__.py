"""Provider SDK seams: the only modules that call stripe and gocardless_pro."""

from collections.abc import Callable, Iterable, Iterator
from typing import Any


def every_item(
    call: Callable[..., Any], items: Iterable[Any], to_dict: Callable[[Any], dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Every item of an SDK's paginated list. A later page's request is made inside `next`, so each is made through
    the gateway's `call` (its error mapping), as the first page's was: else a raw SDK error reached the job or the
    command."""
    iterator = iter(items)
    while True:
        try:
            item = call(next, iterator)
        except StopIteration:
            return
        yield to_dict(item)

"""The Publish side of a subscription: extra Publish requests in flight (:func:`publish_loop`)
and every Publish response decoded by the measured fast decoder (:func:`install_fast_decoder`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import Subscription
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary
from asyncua.ua.uaerrors import UaStructParsingError

from plantmon_common.opcua.asyncua_private import replace_session_publish
from plantmon_common.opcua_fast import decode_publish
from plantmon_common.sample import Sample

__all__ = ["DecodeCounts", "install_fast_decoder", "publish_loop", "running"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def running(coro: Coroutine[Any, Any, None], name: str) -> Iterator[asyncio.Task[None]]:
    """A task for the duration of the block, cancelled when it is left; an end other than the
    cancellation is logged (the block goes on without it)."""
    task = asyncio.create_task(coro, name=name)

    def ended(done: asyncio.Task[None]) -> None:
        if done.cancelled():
            return
        if (exc := done.exception()) is not None:
            logger.error("background task failed", extra={"task": name}, exc_info=exc)
        else:
            logger.info("background task ended", extra={"task": name})

    task.add_done_callback(ended)
    try:
        yield task
    finally:
        task.cancel()


async def publish_loop(client: Client, sub: Any) -> None:
    """Keep one more Publish request of ``sub``'s session in flight, like asyncua's own loop.

    asyncua's client sends the next Publish only after the previous response was decoded and
    handled, so the server, holding the notifications until a request arrives, and the client
    take turns. With more requests queued at the server (OPC UA Part 4, 5.13.5: a client sends
    several to cover its own processing and the network time) the server answers each
    publishing interval while the client still decodes the previous answer, so responses stay
    small and notifications wait less. The responses go through the subscription's own
    callback, and each one's sequence number is acknowledged in this loop's next request.
    Runs until cancelled (the session's end) or the server has no subscription left; like
    asyncua's loop, any other failure is logged and retried, and a response is acknowledged even
    when handling it failed.
    """
    acks: list[ua.SubscriptionAcknowledgement] = []
    while True:
        try:
            response = await client.uaclient.publish(acks)
        except ua.uaerrors.BadTimeout:
            acks = []
            continue
        except ua.uaerrors.BadNoSubscription:
            logger.info("the server has no subscription for this session; extra publish requests stop")
            return
        except (ua.UaError, ConnectionError, OSError) as exc:
            # The connection is going; the session's watchdog notices and reconnects.
            logger.debug("extra publish request failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            acks = []
            await asyncio.sleep(1.0)
            continue
        except Exception:
            logger.exception("extra publish request failed; retrying in 1 s")
            acks = []
            await asyncio.sleep(1.0)
            continue
        acks = []
        result = response.Parameters
        if not result.SubscriptionId:
            return
        if result.SubscriptionId == sub.subscription_id:
            try:
                await sub.publish_callback(result)
            except Exception:
                logger.exception("handling a publish response failed")
        if result.NotificationMessage.NotificationData:
            acks.append(
                ua.SubscriptionAcknowledgement(
                    SubscriptionId=result.SubscriptionId, SequenceNumber=result.NotificationMessage.SequenceNumber
                )
            )


@dataclass(slots=True)
class DecodeCounts:
    """Publish responses read by the fast decoder, and those it left to asyncua."""

    fast: int = 0
    asyncua: int = 0


def install_fast_decoder(
    client: Client,
    sub: Subscription,
    paths: dict[int, str],
    batch_sink: Callable[[list[Sample]], None],
    counts: DecodeCounts,
) -> None:
    """Every Publish of this session (asyncua's loop and :func:`publish_loop`) decoded by
    :func:`~plantmon_common.opcua_fast.decode_publish`, asyncua's decoder for anything else.

    Installed on the session object, so the stock publish loop, its acknowledgements and the
    subscription callback are unchanged: numeric data changes go to ``batch_sink`` here,
    and the loop gets a response with the same subscription, sequence number and (empty)
    notification data to acknowledge. ``paths`` maps client handles to tag paths.
    """

    def decode(raw: bytes) -> ua.PublishResponse:
        decoded = decode_publish(raw, paths)
        if decoded is None:
            counts.asyncua += 1
            try:
                return struct_from_binary(ua.PublishResponse, Buffer(raw))
            except Exception as exc:
                logger.exception("cannot decode a publish response")
                raise UaStructParsingError from exc
        counts.fast += 1
        subscription_id, sequence_number, has_data, samples = decoded
        if samples and subscription_id == sub.subscription_id:
            batch_sink(samples)
        response = ua.PublishResponse()
        response.Parameters.SubscriptionId = subscription_id
        response.Parameters.NotificationMessage.SequenceNumber = sequence_number
        if has_data:
            response.Parameters.NotificationMessage.NotificationData = [ua.DataChangeNotification()]
        return response

    replace_session_publish(client, decode)

from chatledger import Ledger


async def test_chat_turn_is_recorded(ledger: Ledger) -> None:
    turn = await ledger.chat("hello there")
    result = await turn.result()
    assert result.status == "completed"
    detail = await ledger.get_run(result.run_id)
    assert [m.role for m in detail.messages] == ["user", "assistant"]

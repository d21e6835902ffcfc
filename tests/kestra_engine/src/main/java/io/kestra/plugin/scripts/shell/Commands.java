package io.kestra.plugin.scripts.shell;

import java.util.List;

import io.kestra.core.models.annotations.Plugin;
import io.kestra.core.models.property.Property;
import io.kestra.core.models.tasks.RunnableTask;
import io.kestra.core.runners.RunContext;
import io.kestra.plugin.scripts.exec.AbstractExecScript;
import io.kestra.plugin.scripts.exec.scripts.models.ScriptOutput;
import io.swagger.v3.oas.annotations.media.Schema;
import jakarta.validation.constraints.NotNull;

/**
 * STAND-IN for the shell plugin's task of the same name.
 *
 * <p>The shell plugin ({@code io.kestra.plugin:plugin-script-shell}) is not served by the Maven
 * Central these machines reach (every version answers 404), while the engine is. This class keeps
 * the plugin's public contract, one required property {@code commands} (a list) plus a
 * {@code containerImage} default, on top of Kestra's own {@link AbstractExecScript} from
 * {@code io.kestra:script}: every other property, their validation, the task runner (Process),
 * the environment, {@code ::{"outputs"}::} parsing and metrics are Kestra's code, not ours.
 * Delete it the day the plugin is obtainable and depend on the plugin instead.
 */
@Schema(title = "Stand-in for the shell plugin's Commands task (see the class comment).")
@Plugin
public class Commands extends AbstractExecScript implements RunnableTask<ScriptOutput> {
    @NotNull
    private Property<String> containerImage = Property.ofValue("ubuntu");

    @Schema(title = "Shell commands to run.")
    @NotNull
    private Property<List<String>> commands;

    public Commands() {
    }

    @Override
    public Property<String> getContainerImage() {
        return containerImage;
    }

    public Property<List<String>> getCommands() {
        return commands;
    }

    @Override
    public ScriptOutput run(RunContext runContext) throws Exception {
        // CommandsWrapper renders interpreter, beforeCommands and commands itself (so they see
        // {{ workingDir }}) and prefixes `set -e` when failFast, as every script task does.
        return commands(runContext)
            .withInterpreter(getInterpreter())
            .withBeforeCommands(getBeforeCommands())
            .withBeforeCommandsWithOptions(true)
            .withCommands(commands)
            .run();
    }
}
